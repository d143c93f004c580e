//! Tenants (accounts) and their Ed25519 signing key pairs.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::{Engine, engine::general_purpose::STANDARD};
use sea_orm::{
    ActiveValue::Set, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, prelude::*,
};

use super::{Store, entities::tenant, page::Page};
use crate::{
    error::{Error, Result},
    time::now_micros,
};

impl Store {
    /// Creates a tenant with a fresh key pair; `id` was validated by the caller.
    pub async fn create_tenant(&self, id: String, name: String) -> Result<tenant::Model> {
        if self.get_tenant(&id).await?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "tenant '{id}' already exists"
            )));
        }
        let seed: [u8; 32] = rand::random();
        let signing = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| Error::Internal(anyhow::anyhow!("derive a signing key: {e}")))?;
        let model = tenant::ActiveModel {
            id: Set(id.clone()),
            name: Set(name),
            signing_key: Set(STANDARD.encode(seed)),
            public_key: Set(hex::encode(signing.public_key().as_ref())),
            created_at: Set(now_micros()),
        };
        match tenant::Entity::insert(model)
            .exec_with_returning(&self.db)
            .await
        {
            Ok(model) => Ok(model),
            // Lost a race with a concurrent create of the same id.
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => Err(
                Error::AlreadyExists(format!("tenant '{id}' already exists")),
            ),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Option<tenant::Model>> {
        Ok(tenant::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// The tenant, or `NOT_FOUND` naming it.
    pub async fn require_tenant(&self, id: &str) -> Result<tenant::Model> {
        self.get_tenant(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant '{id}' not found")))
    }

    /// Tenants oldest first (ids are chosen by callers, so they do not sort by age);
    /// the page key is `created_at:id` of the last row.
    pub async fn list_tenants(&self, page: &Page) -> Result<(Vec<tenant::Model>, String)> {
        let mut query = tenant::Entity::find()
            .order_by_asc(tenant::Column::CreatedAt)
            .order_by_asc(tenant::Column::Id);
        if let Some(after) = &page.after {
            let (created_at, id) = after
                .split_once(':')
                .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| {
                    Error::invalid("page_token", "is not a token returned by this server")
                })?;
            query = query.filter(
                Condition::any()
                    .add(tenant::Column::CreatedAt.gt(created_at))
                    .add(
                        Condition::all()
                            .add(tenant::Column::CreatedAt.eq(created_at))
                            .add(tenant::Column::Id.gt(id)),
                    ),
            );
        }
        let rows = query.limit(page.size + 1).all(&self.db).await?;
        Ok(page.finish(rows, |t| format!("{}:{}", t.created_at, t.id)))
    }

    /// Deletes a tenant; the database cascades to its events, endpoints, deliveries, attempts
    /// and keys (foreign keys, and on PostgreSQL triggers: migration 6).
    pub async fn delete_tenant(&self, id: &str) -> Result<bool> {
        let res = tenant::Entity::delete_by_id(id).exec(&self.db).await?;
        Ok(res.rows_affected > 0)
    }
}
