//! What every handler shares.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    auth::{self, Access, Principal},
    bus::Bus,
    cache::TtlCache,
    config::Config,
    egress::client::Sender,
    error::Result,
    publish::Writer,
    queue::Queue,
    store::Store,
};

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub writer: Writer,
    pub bus: Arc<Bus>,
    /// The delivery queue, for deliveries created outside publishes (retries, replays).
    pub queue: Arc<dyn Queue>,
    /// Outbound HTTP, for `PingEndpoint`.
    pub sender: Sender,
    /// `User-Agent` of webhook requests.
    pub user_agent: String,
    /// Cancelled when the server begins a graceful shutdown; ends tails.
    pub shutdown: CancellationToken,
    /// Principals by key hash, and tenants known to exist: two lookups every call makes.
    pub credentials: Credentials,
}

/// How long a looked-up key or tenant is trusted without asking the database again.
/// Revocations and deletions made through this process clear it at once.
pub const CREDENTIALS_TTL: Duration = Duration::from_secs(5);

pub struct Credentials {
    keys: TtlCache<String, Principal>,
    tenants: TtlCache<String, ()>,
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            keys: TtlCache::new(CREDENTIALS_TTL),
            tenants: TtlCache::new(CREDENTIALS_TTL),
        }
    }
}

impl Credentials {
    /// Forgets everything (after a key is revoked or a tenant deleted).
    pub fn forget(&self) {
        self.keys.clear();
        self.tenants.clear();
    }
}

impl AppState {
    pub async fn principal<T>(&self, request: &tonic::Request<T>) -> Result<Principal> {
        let hash = crate::store::keys::hash_secret(auth::bearer_secret(request.metadata())?);
        if let Some(principal) = self.credentials.keys.get(&hash) {
            return Ok(principal);
        }
        let principal = auth::principal_for(&self.store, &hash).await?;
        self.credentials.keys.insert(hash, principal.clone());
        Ok(principal)
    }

    /// `NOT_FOUND` unless tenant `id` exists.
    pub async fn require_tenant(&self, id: &str) -> Result<()> {
        if self.credentials.tenants.get(&id.to_string()).is_some() {
            return Ok(());
        }
        self.store.require_tenant(id).await?;
        self.credentials.tenants.insert(id.to_string(), ());
        Ok(())
    }

    /// Authenticates, then resolves the tenant the call may act on and checks that it
    /// exists (a tenant key's own tenant always does, unless it was just deleted).
    pub async fn tenant_scope<T>(
        &self,
        request: &tonic::Request<T>,
        requested: &str,
        access: Access,
    ) -> Result<(Principal, String)> {
        let principal = self.principal(request).await?;
        let tenant = principal.tenant_for(requested, access)?;
        self.require_tenant(&tenant).await?;
        Ok((principal, tenant))
    }
}

pub type State = Arc<AppState>;
