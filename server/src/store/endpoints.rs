//! Webhook endpoints, scoped by tenant.

use base64::{Engine, engine::general_purpose::STANDARD};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait, prelude::*,
};

use super::{Store, entities::endpoint, page::Page};
use crate::{
    error::Result,
    ids::{self, Kind},
    time::now_micros,
};

/// The stored fields of an endpoint that callers choose (everything but ids, secret
/// and times).
#[derive(Clone, Debug)]
pub struct EndpointFields {
    pub url: String,
    pub filters: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: String,
    pub description: String,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub environment: String,
    pub format: String,
    pub schemes: Vec<String>,
    pub keygen_algorithm: String,
    /// Retry delays in seconds; empty means the server's schedule.
    pub retry_schedule: Vec<u32>,
}

impl EndpointFields {
    /// The fields of a stored endpoint, to apply a patch to.
    pub fn from_model(m: &endpoint::Model) -> EndpointFields {
        EndpointFields {
            url: m.url.clone(),
            filters: m.filter_list(),
            enabled: m.enabled,
            disabled_reason: m.disabled_reason.clone(),
            description: m.description.clone(),
            metadata: serde_json::from_str(&m.metadata).unwrap_or_default(),
            environment: m.environment.clone(),
            format: m.format.clone(),
            schemes: m.scheme_list(),
            keygen_algorithm: m.keygen_algorithm.clone(),
            retry_schedule: m.retry_schedule_secs(),
        }
    }

    fn apply(self, model: &mut endpoint::ActiveModel) {
        model.url = Set(self.url);
        model.filters = Set(serde_json::to_string(&self.filters).unwrap_or_default());
        model.enabled = Set(self.enabled);
        model.disabled_reason = Set(self.disabled_reason);
        model.description = Set(self.description);
        model.metadata = Set(serde_json::to_string(&self.metadata).unwrap_or_default());
        model.environment = Set(self.environment);
        model.format = Set(self.format);
        model.schemes = Set(self.schemes.join(","));
        model.keygen_algorithm = Set(self.keygen_algorithm);
        model.retry_schedule = Set(serde_json::to_string(&self.retry_schedule).unwrap_or_default());
    }
}

impl endpoint::Model {
    pub fn filter_list(&self) -> Vec<String> {
        serde_json::from_str(&self.filters).unwrap_or_default()
    }

    pub fn retry_schedule_secs(&self) -> Vec<u32> {
        serde_json::from_str(&self.retry_schedule).unwrap_or_default()
    }

    pub fn scheme_list(&self) -> Vec<String> {
        self.schemes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// A Standard Webhooks secret: `whsec_` + base64 of 24 random bytes.
fn generate_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", STANDARD.encode(bytes))
}

impl Store {
    pub async fn create_endpoint(
        &self,
        tenant_id: &str,
        fields: EndpointFields,
    ) -> Result<(endpoint::Model, String)> {
        let now = now_micros();
        let secret = generate_secret();
        let mut model = endpoint::ActiveModel {
            id: Set(ids::new(Kind::Endpoint)),
            tenant_id: Set(tenant_id.to_string()),
            secret: Set(secret.clone()),
            previous_secret: Set(None),
            previous_secret_expires_at: Set(None),
            failing_since: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        };
        fields.apply(&mut model);
        let model = endpoint::Entity::insert(model)
            .exec_with_returning(&self.db)
            .await?;
        Ok((model, secret))
    }

    pub async fn get_endpoint(&self, tenant_id: &str, id: &str) -> Result<Option<endpoint::Model>> {
        Ok(endpoint::Entity::find_by_id(id)
            .filter(endpoint::Column::TenantId.eq(tenant_id))
            .one(&self.db)
            .await?)
    }

    pub async fn list_endpoints(
        &self,
        tenant_id: &str,
        page: &Page,
    ) -> Result<(Vec<endpoint::Model>, String)> {
        let mut query = endpoint::Entity::find()
            .filter(endpoint::Column::TenantId.eq(tenant_id))
            .order_by_asc(endpoint::Column::Id);
        if let Some(after) = &page.after {
            query = query.filter(endpoint::Column::Id.gt(after.clone()));
        }
        let rows = query.limit(page.size + 1).all(&self.db).await?;
        Ok(page.finish(rows, |e| e.id.clone()))
    }

    /// Replaces the caller-chosen fields of an endpoint; `None` when it does not exist.
    pub async fn update_endpoint(
        &self,
        tenant_id: &str,
        id: &str,
        fields: EndpointFields,
    ) -> Result<Option<endpoint::Model>> {
        let Some(current) = self.get_endpoint(tenant_id, id).await? else {
            return Ok(None);
        };
        // Re-enabling starts a new run: failures from before the endpoint was disabled
        // must not count towards auto-disable (it would be disabled again at once).
        let enabling = fields.enabled && !current.enabled;
        let mut model = current.into_active_model();
        fields.apply(&mut model);
        if enabling {
            model.failing_since = Set(None);
        }
        model.updated_at = Set(now_micros());
        Ok(Some(model.update(&self.db).await?))
    }

    pub async fn delete_endpoint(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let res = endpoint::Entity::delete_many()
            .filter(endpoint::Column::Id.eq(id))
            .filter(endpoint::Column::TenantId.eq(tenant_id))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected > 0)
    }

    /// Swaps in a new secret, keeping the old one valid for `grace_micros`.
    pub async fn rotate_endpoint_secret(
        &self,
        tenant_id: &str,
        id: &str,
        grace_micros: i64,
    ) -> Result<Option<(endpoint::Model, String)>> {
        let txn = self.db.begin().await?;
        let Some(current) = endpoint::Entity::find_by_id(id)
            .filter(endpoint::Column::TenantId.eq(tenant_id))
            .one(&txn)
            .await?
        else {
            return Ok(None);
        };
        let secret = generate_secret();
        let now = now_micros();
        let mut model = current.clone().into_active_model();
        model.previous_secret = Set(Some(current.secret));
        model.previous_secret_expires_at = Set(Some(now + grace_micros));
        model.secret = Set(secret.clone());
        model.updated_at = Set(now);
        let model = model.update(&txn).await?;
        txn.commit().await?;
        Ok(Some((model, secret)))
    }

    /// Enabled endpoints of these tenants: the candidates for a batch's deliveries.
    pub async fn enabled_endpoints<C: ConnectionTrait>(
        conn: &C,
        tenant_ids: Vec<String>,
    ) -> Result<Vec<endpoint::Model>> {
        Ok(endpoint::Entity::find()
            .filter(endpoint::Column::TenantId.is_in(tenant_ids))
            .filter(endpoint::Column::Enabled.eq(true))
            .all(conn)
            .await?)
    }
}
