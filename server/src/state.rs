//! What every handler shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    auth::{self, Access, Principal},
    bus::Bus,
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
}

impl AppState {
    pub async fn principal<T>(&self, request: &tonic::Request<T>) -> Result<Principal> {
        auth::authenticate(&self.store, request.metadata()).await
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
        self.store.require_tenant(&tenant).await?;
        Ok((principal, tenant))
    }
}

pub type State = Arc<AppState>;
