//! `herald.v1.EndpointService`.

use std::collections::BTreeMap;

use tonic::{Request, Response, Status};

use crate::{
    auth::Access,
    config::Config,
    convert,
    delivery::request::{self, RequestParts},
    error::{Error, Result},
    filter::Filter,
    ids::{self, Kind},
    proto::{
        self, CreateEndpointRequest, CreateEndpointResponse, DeleteEndpointRequest,
        DeleteEndpointResponse, GetEndpointRequest, GetSigningMaterialRequest, KeygenAlgorithm,
        ListEndpointsRequest, ListEndpointsResponse, PingEndpointRequest, PingEndpointResponse,
        RotateEndpointSecretRequest, RotateEndpointSecretResponse, SignatureScheme,
        SigningMaterial, SigningSettings, UpdateEndpointRequest, WebhookFormat,
        endpoint_service_server::EndpointService,
    },
    publish::validate::validate_environment,
    state::State,
    store::{endpoints::EndpointFields, entities::endpoint, page::Page},
    time,
};

const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 1024;
const MAX_METADATA_PAIRS: usize = 32;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 1024;
const DEFAULT_DISABLED_REASON: &str = "disabled by an operator";

pub struct EndpointApi {
    state: State,
}

impl EndpointApi {
    pub fn new(state: State) -> Self {
        EndpointApi { state }
    }

    /// Authorises a manager call on endpoint `id` of the request and loads it (another
    /// tenant's endpoint is not found).
    async fn scoped_endpoint<T>(
        &self,
        request: &Request<T>,
        tenant_id: &str,
        id: &str,
    ) -> Result<(String, endpoint::Model)> {
        let (_, tenant) = self
            .state
            .tenant_scope(request, tenant_id, Access::Manage)
            .await?;
        let id = ids::parse(Kind::Endpoint, "id", id)?;
        let model = self
            .state
            .store
            .get_endpoint(&tenant, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        Ok((tenant, model))
    }
}

fn validate_url(config: &Config, field: &str, raw: &str) -> Result<String> {
    if raw.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if raw.len() > MAX_URL {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_URL} bytes"),
        ));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| Error::invalid(field, format!("is not a valid URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if config.allow_http_endpoints => {}
        "http" => {
            return Err(Error::invalid(
                field,
                "must use https (this server does not allow http endpoints)",
            ));
        }
        other => {
            return Err(Error::invalid(
                field,
                format!("scheme '{other}' is not allowed (use https)"),
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid(field, "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid(
            field,
            "must not carry credentials (user:password@)",
        ));
    }
    if url.fragment().is_some() {
        return Err(Error::invalid(field, "must not have a #fragment"));
    }
    Ok(url.to_string())
}

fn validate_filters(field: &str, filters: &[String]) -> Result<Vec<String>> {
    Filter::parse(field, filters)?;
    if filters.is_empty() {
        return Ok(vec!["*".into()]);
    }
    let mut out: Vec<String> = Vec::with_capacity(filters.len());
    for f in filters {
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    Ok(out)
}

fn validate_description(field: &str, text: &str) -> Result<()> {
    if text.chars().count() > MAX_DESCRIPTION {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(())
}

fn validate_metadata(
    field: &str,
    metadata: std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(Error::invalid(
            field,
            format!("must hold at most {MAX_METADATA_PAIRS} pairs"),
        ));
    }
    for (k, v) in &metadata {
        if k.is_empty() || k.chars().count() > MAX_METADATA_KEY {
            return Err(Error::invalid(
                field,
                format!("keys must be 1 to {MAX_METADATA_KEY} characters"),
            ));
        }
        if v.chars().count() > MAX_METADATA_VALUE {
            return Err(Error::invalid(
                format!("{field}[{k}]"),
                format!("must be at most {MAX_METADATA_VALUE} characters"),
            ));
        }
    }
    Ok(metadata.into_iter().collect())
}

/// Applies `settings` over `fields` (unspecified values keep what `fields` has).
fn apply_signing(fields: &mut EndpointFields, settings: &SigningSettings) -> Result<()> {
    let format = WebhookFormat::try_from(settings.format).map_err(|_| {
        Error::invalid(
            "signing.format",
            format!("unknown format {}", settings.format),
        )
    })?;
    if let Some(format) = convert::format_from_proto(format) {
        fields.format = format.into();
    }
    let algorithm = KeygenAlgorithm::try_from(settings.keygen_algorithm).map_err(|_| {
        Error::invalid(
            "signing.keygen_algorithm",
            format!("unknown algorithm {}", settings.keygen_algorithm),
        )
    })?;
    match convert::algorithm_from_proto(algorithm) {
        None => {}
        Some("ed25519") => fields.keygen_algorithm = "ed25519".into(),
        Some(other) => {
            return Err(Error::invalid(
                "signing.keygen_algorithm",
                format!("{other} is not available on this server (use ed25519)"),
            ));
        }
    }
    if !settings.schemes.is_empty() {
        let mut schemes = Vec::new();
        for (i, raw) in settings.schemes.iter().enumerate() {
            let name = SignatureScheme::try_from(*raw)
                .ok()
                .and_then(convert::scheme_from_proto)
                .ok_or_else(|| {
                    Error::invalid(
                        format!("signing.schemes[{i}]"),
                        format!("unknown scheme {raw}"),
                    )
                })?;
            if !schemes.iter().any(|s| s == name) {
                schemes.push(name.to_string());
            }
        }
        fields.schemes = schemes;
    }
    Ok(())
}

#[tonic::async_trait]
impl EndpointService for EndpointApi {
    async fn create_endpoint(
        &self,
        request: Request<CreateEndpointRequest>,
    ) -> Result<Response<CreateEndpointResponse>, Status> {
        let (_, tenant) = self
            .state
            .tenant_scope(&request, &request.get_ref().tenant_id, Access::Manage)
            .await?;
        let req = request.into_inner();
        let url = validate_url(&self.state.config, "url", &req.url)?;
        let filters = validate_filters("filters", &req.filters)?;
        validate_description("description", &req.description)?;
        validate_environment("environment", &req.environment)?;
        let metadata = validate_metadata("metadata", req.metadata)?;
        let mut fields = EndpointFields {
            url,
            filters,
            enabled: !req.disabled,
            disabled_reason: if req.disabled {
                DEFAULT_DISABLED_REASON.into()
            } else {
                String::new()
            },
            description: req.description,
            metadata,
            environment: req.environment,
            format: "keygen".into(),
            schemes: vec!["keygen".into(), "standard-webhooks".into()],
            keygen_algorithm: "ed25519".into(),
            retry_schedule: validate_retry_schedule(
                "retry_schedule_secs",
                req.retry_schedule_secs,
            )?,
        };
        if let Some(signing) = &req.signing {
            apply_signing(&mut fields, signing)?;
        }
        let (model, secret) = self.state.store.create_endpoint(&tenant, fields).await?;
        Ok(Response::new(CreateEndpointResponse {
            endpoint: Some(convert::endpoint(&model)),
            secret,
        }))
    }

    async fn get_endpoint(
        &self,
        request: Request<GetEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        let req = request.get_ref();
        let (_, model) = self
            .scoped_endpoint(&request, &req.tenant_id, &req.id)
            .await?;
        Ok(Response::new(convert::endpoint(&model)))
    }

    async fn list_endpoints(
        &self,
        request: Request<ListEndpointsRequest>,
    ) -> Result<Response<ListEndpointsResponse>, Status> {
        let (_, tenant) = self
            .state
            .tenant_scope(&request, &request.get_ref().tenant_id, Access::Manage)
            .await?;
        let req = request.into_inner();
        let page = Page::parse(req.page_size, &req.page_token)?;
        let (rows, next) = self.state.store.list_endpoints(&tenant, &page).await?;
        Ok(Response::new(ListEndpointsResponse {
            endpoints: rows.iter().map(convert::endpoint).collect(),
            next_page_token: next,
        }))
    }

    async fn update_endpoint(
        &self,
        request: Request<UpdateEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        let (tenant, current) = {
            let req = request.get_ref();
            self.scoped_endpoint(&request, &req.tenant_id, &req.id)
                .await?
        };
        let req = request.into_inner();
        let id = current.id.clone();
        let mut fields = EndpointFields::from_model(&current);
        if let Some(url) = &req.url {
            fields.url = validate_url(&self.state.config, "url", url)?;
        }
        if let Some(list) = &req.filters {
            fields.filters = validate_filters("filters.filters", &list.filters)?;
        }
        if let Some(description) = req.description {
            validate_description("description", &description)?;
            fields.description = description;
        }
        if let Some(metadata) = req.metadata {
            fields.metadata = validate_metadata("metadata.entries", metadata.entries)?;
        }
        if let Some(environment) = req.environment {
            validate_environment("environment", &environment)?;
            fields.environment = environment;
        }
        if let Some(signing) = &req.signing {
            apply_signing(&mut fields, signing)?;
        }
        if let Some(schedule) = req.retry_schedule {
            fields.retry_schedule = validate_retry_schedule("retry_schedule.secs", schedule.secs)?;
        }
        match (req.enabled, req.disabled_reason) {
            (Some(true), Some(_)) => {
                return Err(Error::invalid(
                    "disabled_reason",
                    "only applies when enabled is false",
                )
                .into());
            }
            (Some(true), None) => {
                fields.enabled = true;
                fields.disabled_reason.clear();
            }
            (Some(false), reason) => {
                fields.enabled = false;
                fields.disabled_reason = reason
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| DEFAULT_DISABLED_REASON.into());
            }
            (None, Some(reason)) if !fields.enabled => fields.disabled_reason = reason,
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "disabled_reason",
                    "only applies to a disabled endpoint (set enabled to false)",
                )
                .into());
            }
            (None, None) => {}
        }
        validate_description("disabled_reason", &fields.disabled_reason)?;
        let model = self
            .state
            .store
            .update_endpoint(&tenant, &id, fields)
            .await?
            .ok_or_else(|| not_found(&id))?;
        Ok(Response::new(convert::endpoint(&model)))
    }

    async fn delete_endpoint(
        &self,
        request: Request<DeleteEndpointRequest>,
    ) -> Result<Response<DeleteEndpointResponse>, Status> {
        let (_, tenant) = self
            .state
            .tenant_scope(&request, &request.get_ref().tenant_id, Access::Manage)
            .await?;
        let id = ids::parse(Kind::Endpoint, "id", &request.get_ref().id)?;
        if !self.state.store.delete_endpoint(&tenant, id).await? {
            return Err(not_found(id).into());
        }
        Ok(Response::new(DeleteEndpointResponse {}))
    }

    async fn rotate_endpoint_secret(
        &self,
        request: Request<RotateEndpointSecretRequest>,
    ) -> Result<Response<RotateEndpointSecretResponse>, Status> {
        let (_, tenant) = self
            .state
            .tenant_scope(&request, &request.get_ref().tenant_id, Access::Manage)
            .await?;
        let id = ids::parse(Kind::Endpoint, "id", &request.get_ref().id)?;
        let grace = i64::try_from(self.state.config.secret_rotation_grace_secs)
            .unwrap_or(i64::MAX / 1_000_000)
            .saturating_mul(1_000_000);
        let (model, secret) = self
            .state
            .store
            .rotate_endpoint_secret(&tenant, id, grace)
            .await?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::new(RotateEndpointSecretResponse {
            previous_secret_expires_at: model.previous_secret_expires_at.map(time::to_timestamp),
            endpoint: Some(convert::endpoint(&model)),
            secret,
        }))
    }

    async fn ping_endpoint(
        &self,
        request: Request<PingEndpointRequest>,
    ) -> Result<Response<PingEndpointResponse>, Status> {
        let req = request.get_ref();
        let (tenant_id, endpoint) = self
            .scoped_endpoint(&request, &req.tenant_id, &req.id)
            .await?;
        let tenant = self.state.store.require_tenant(&tenant_id).await?;
        let now = time::now_micros();
        let ping_id = ids::new(Kind::Delivery);
        let payload = serde_json::json!({
            "data": {
                "id": endpoint.id,
                "type": "webhook-endpoints",
                "attributes": { "url": endpoint.url }
            }
        })
        .to_string();
        let parts = RequestParts {
            delivery_id: &ping_id,
            event_type: PING_EVENT,
            payload_json: &payload,
            idempotency_token: &ping_id,
            created_at_micros: now,
            occurred_at_micros: now,
        };
        let (url, headers, body) =
            request::build(&endpoint, &tenant, &parts, &self.state.user_agent)
                .map_err(|e| Error::FailedPrecondition(format!("cannot build the request: {e}")))?;
        let outcome = self.state.sender.post(&url, headers, body).await;
        Ok(Response::new(PingEndpointResponse {
            success: outcome.is_success(),
            status_code: outcome.status.map(u32::from).unwrap_or_default(),
            response_body: outcome.body,
            error_kind: outcome
                .error
                .as_ref()
                .map(|e| e.kind.as_str().to_string())
                .unwrap_or_default(),
            error_message: outcome.error.map(|e| e.message).unwrap_or_default(),
            duration: Some(convert::duration(
                i64::try_from(outcome.elapsed.as_micros()).unwrap_or(i64::MAX),
            )),
        }))
    }

    async fn get_signing_material(
        &self,
        request: Request<GetSigningMaterialRequest>,
    ) -> Result<Response<SigningMaterial>, Status> {
        let req = request.get_ref();
        let (tenant_id, endpoint) = self
            .scoped_endpoint(&request, &req.tenant_id, &req.id)
            .await?;
        let tenant = self.state.store.require_tenant(&tenant_id).await?;
        let previous = endpoint
            .previous_secret
            .clone()
            .zip(endpoint.previous_secret_expires_at)
            .filter(|(_, until)| *until > time::now_micros());
        Ok(Response::new(SigningMaterial {
            secret: endpoint.secret.clone(),
            previous_secret: previous
                .as_ref()
                .map(|(s, _)| s.clone())
                .unwrap_or_default(),
            previous_secret_expires_at: previous.map(|(_, until)| time::to_timestamp(until)),
            keygen_public_key_pem: request::public_key_pem(&tenant.public_key).unwrap_or_default(),
            keygen_public_key: tenant.public_key,
            keygen_key_id: tenant.id,
        }))
    }
}

/// The event type of `PingEndpoint` requests (not in the catalog: never published).
pub const PING_EVENT: &str = "endpoint.ping";

/// Most retries an endpoint's own schedule may hold, and the longest single delay.
const MAX_RETRIES: usize = 50;
const MAX_RETRY_DELAY_SECS: u32 = 7 * 24 * 3600;

fn validate_retry_schedule(field: &str, secs: Vec<u32>) -> Result<Vec<u32>> {
    if secs.len() > MAX_RETRIES {
        return Err(Error::invalid(
            field,
            format!("holds at most {MAX_RETRIES} delays"),
        ));
    }
    if let Some(i) = secs.iter().position(|s| *s > MAX_RETRY_DELAY_SECS) {
        return Err(Error::invalid(
            format!("{field}[{i}]"),
            format!("must be at most {MAX_RETRY_DELAY_SECS} seconds (7 days)"),
        ));
    }
    Ok(secs)
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("endpoint '{id}' not found"))
}
