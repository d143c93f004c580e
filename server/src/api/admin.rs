//! `herald.v1.AdminService`: tenants and API keys.

use tonic::{Request, Response, Status};

use crate::{
    auth::Role,
    convert,
    error::{Error, Result},
    ids::{self, Kind},
    proto::{
        self, CreateApiKeyRequest, CreateApiKeyResponse, CreateTenantRequest, DeleteTenantRequest,
        DeleteTenantResponse, GetTenantRequest, ListApiKeysRequest, ListApiKeysResponse,
        ListTenantsRequest, ListTenantsResponse, RevokeApiKeyRequest,
        admin_service_server::AdminService,
    },
    state::State,
    store::page::Page,
};

const MAX_NAME: usize = 200;
const MAX_TENANT_ID: usize = 64;

pub struct AdminApi {
    state: State,
}

impl AdminApi {
    pub fn new(state: State) -> Self {
        AdminApi { state }
    }
}

fn validate_tenant_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if id.len() > MAX_TENANT_ID
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::invalid(
            field,
            format!("must be 1 to {MAX_TENANT_ID} letters, digits, '-' or '_'"),
        ));
    }
    Ok(())
}

fn validate_name(field: &str, name: &str, required: bool) -> Result<()> {
    if required && name.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_NAME} characters"),
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_tenant(
        &self,
        request: Request<CreateTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        self.state.principal(&request).await?.require_admin()?;
        let req = request.into_inner();
        let id = if req.id.is_empty() {
            ids::new(Kind::Tenant)
        } else {
            validate_tenant_id("id", &req.id)?;
            req.id
        };
        validate_name("name", &req.name, true)?;
        let tenant = self.state.store.create_tenant(id, req.name).await?;
        Ok(Response::new(convert::tenant(&tenant)))
    }

    async fn get_tenant(
        &self,
        request: Request<GetTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let principal = self.state.principal(&request).await?;
        let id = &request.get_ref().id;
        validate_tenant_id("id", id)?;
        // A tenant key may read its own tenant (for its public key); any other tenant
        // is reported missing rather than forbidden, so ids cannot be probed.
        if !principal.is_admin() && principal.tenant_id.as_deref() != Some(id) {
            return Err(Error::NotFound(format!("tenant '{id}' not found")).into());
        }
        let tenant = self.state.store.require_tenant(id).await?;
        Ok(Response::new(convert::tenant(&tenant)))
    }

    async fn list_tenants(
        &self,
        request: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        self.state.principal(&request).await?.require_admin()?;
        let req = request.into_inner();
        let page = Page::parse(req.page_size, &req.page_token)?;
        let (rows, next) = self.state.store.list_tenants(&page).await?;
        Ok(Response::new(ListTenantsResponse {
            tenants: rows.iter().map(convert::tenant).collect(),
            next_page_token: next,
        }))
    }

    async fn delete_tenant(
        &self,
        request: Request<DeleteTenantRequest>,
    ) -> Result<Response<DeleteTenantResponse>, Status> {
        self.state.principal(&request).await?.require_admin()?;
        let id = &request.get_ref().id;
        validate_tenant_id("id", id)?;
        let deleted = self.state.store.delete_tenant(id).await?;
        self.state.credentials.forget();
        if !deleted {
            return Err(Error::NotFound(format!("tenant '{id}' not found")).into());
        }
        Ok(Response::new(DeleteTenantResponse {}))
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        self.state.principal(&request).await?.require_admin()?;
        let req = request.into_inner();
        let role = Role::from_proto(req.role).ok_or_else(|| {
            Error::invalid(
                "role",
                "is required: ROLE_ADMIN, ROLE_PUBLISHER, ROLE_SUBSCRIBER or ROLE_MANAGER",
            )
        })?;
        validate_name("name", &req.name, false)?;
        let tenant = match (role, req.tenant_id.is_empty()) {
            (Role::Admin, true) => None,
            (Role::Admin, false) => {
                return Err(Error::invalid(
                    "tenant_id",
                    "must be empty for ROLE_ADMIN (admin keys belong to no tenant)",
                )
                .into());
            }
            (_, true) => {
                return Err(Error::invalid("tenant_id", "is required for this role").into());
            }
            (_, false) => {
                validate_tenant_id("tenant_id", &req.tenant_id)?;
                self.state.store.require_tenant(&req.tenant_id).await?;
                Some(req.tenant_id)
            }
        };
        let (key, secret) = self
            .state
            .store
            .create_api_key(tenant, role, req.name)
            .await?;
        Ok(Response::new(CreateApiKeyResponse {
            api_key: Some(convert::api_key(&key)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        self.state.principal(&request).await?.require_admin()?;
        let req = request.into_inner();
        let page = Page::parse(req.page_size, &req.page_token)?;
        let tenant = (!req.tenant_id.is_empty()).then_some(req.tenant_id.as_str());
        let (rows, next) = self.state.store.list_api_keys(tenant, &page).await?;
        Ok(Response::new(ListApiKeysResponse {
            api_keys: rows.iter().map(convert::api_key).collect(),
            next_page_token: next,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<proto::ApiKey>, Status> {
        self.state.principal(&request).await?.require_admin()?;
        let id = ids::parse(Kind::ApiKey, "id", &request.get_ref().id)?;
        let key = self
            .state
            .store
            .get_api_key(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("API key '{id}' not found")))?;
        if key.role == Role::Admin.as_str()
            && key.revoked_at.is_none()
            && self.state.store.count_active_admin_keys().await? <= 1
        {
            return Err(Error::FailedPrecondition(
                "this is the last active admin key: create another before revoking it".into(),
            )
            .into());
        }
        let key = self.state.store.revoke_api_key(id).await?;
        self.state.credentials.forget();
        let key = key.ok_or_else(|| Error::NotFound(format!("API key '{id}' not found")))?;
        Ok(Response::new(convert::api_key(&key)))
    }
}
