//! API keys: random secrets shown once, stored as SHA-256 hashes.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sea_orm::{
    ActiveValue::Set, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, prelude::*,
};
use sha2::{Digest, Sha256};

use super::{Store, entities::api_key, page::Page};
use crate::{
    auth::Role,
    error::Result,
    ids::{self, Kind},
    time::now_micros,
};

/// Prefix of every generated secret, so leaked keys are easy to recognise and scan for.
pub const SECRET_PREFIX: &str = "hrk_";

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn display_prefix(secret: &str) -> String {
    secret.chars().take(SECRET_PREFIX.len() + 6).collect()
}

impl Store {
    /// Creates a key and returns it with its secret (the only time the secret exists
    /// outside the caller's hands).
    pub async fn create_api_key(
        &self,
        tenant_id: Option<String>,
        role: Role,
        name: String,
    ) -> Result<(api_key::Model, String)> {
        let secret = generate_secret();
        let model = self.insert_key(tenant_id, role, name, &secret).await?;
        Ok((model, secret))
    }

    async fn insert_key(
        &self,
        tenant_id: Option<String>,
        role: Role,
        name: String,
        secret: &str,
    ) -> Result<api_key::Model> {
        let model = api_key::ActiveModel {
            id: Set(ids::new(Kind::ApiKey)),
            tenant_id: Set(tenant_id),
            role: Set(role.as_str().to_string()),
            name: Set(name),
            prefix: Set(display_prefix(secret)),
            key_hash: Set(hash_secret(secret)),
            created_at: Set(now_micros()),
            revoked_at: Set(None),
        };
        Ok(api_key::Entity::insert(model)
            .exec_with_returning(&self.db)
            .await?)
    }

    /// The active key whose secret hashes to `key_hash` (see [`hash_secret`]).
    pub async fn find_active_key_by_hash(&self, key_hash: &str) -> Result<Option<api_key::Model>> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::KeyHash.eq(key_hash))
            .filter(api_key::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?)
    }

    /// Whether key `key_id` is still active and tenant `tenant_id` still exists (checked
    /// by long-lived tails).
    pub async fn key_still_valid(&self, key_id: &str, tenant_id: &str) -> Result<bool> {
        let key_active = api_key::Entity::find_by_id(key_id)
            .filter(api_key::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?
            .is_some();
        Ok(key_active && self.get_tenant(tenant_id).await?.is_some())
    }

    pub async fn get_api_key(&self, id: &str) -> Result<Option<api_key::Model>> {
        Ok(api_key::Entity::find_by_id(id).one(&self.db).await?)
    }

    pub async fn list_api_keys(
        &self,
        tenant_id: Option<&str>,
        page: &Page,
    ) -> Result<(Vec<api_key::Model>, String)> {
        let mut query = api_key::Entity::find().order_by_asc(api_key::Column::Id);
        if let Some(tenant_id) = tenant_id {
            query = query.filter(api_key::Column::TenantId.eq(tenant_id));
        }
        if let Some(after) = &page.after {
            query = query.filter(api_key::Column::Id.gt(after.clone()));
        }
        let rows = query.limit(page.size + 1).all(&self.db).await?;
        Ok(page.finish(rows, |k| k.id.clone()))
    }

    /// Revokes a key (idempotent: revoking twice keeps the first time).
    pub async fn revoke_api_key(&self, id: &str) -> Result<Option<api_key::Model>> {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now_micros()))
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        self.get_api_key(id).await
    }

    /// Makes sure the configured bootstrap admin key exists.
    pub async fn ensure_admin_key(&self, secret: &str) -> Result<()> {
        let existing = api_key::Entity::find()
            .filter(api_key::Column::KeyHash.eq(hash_secret(secret)))
            .one(&self.db)
            .await?;
        if existing.is_none() {
            self.insert_key(
                None,
                Role::Admin,
                "bootstrap (configured admin_key)".into(),
                secret,
            )
            .await?;
        }
        Ok(())
    }

    pub async fn count_active_admin_keys(&self) -> Result<u64> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::Role.eq(Role::Admin.as_str()))
            .filter(api_key::Column::RevokedAt.is_null())
            .count(&self.db)
            .await?)
    }
}
