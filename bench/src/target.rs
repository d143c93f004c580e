//! The Herald under test: one already running (`--addr`, `--admin-key`), or one started
//! in this process on its own tokio runtime (see [`crate::procstat`] for why its own).
//!
//! In-process, the configuration is Herald's usual one (`--herald-config` TOML and
//! `HERALD_*` variables, so any setting can be tuned), with what the harness needs on top:
//! a port of its own, the database and Redis given on the command line, `http://`
//! endpoints allowed and `127.0.0.1/32` reachable (the receiver is on loopback), a fresh
//! admin key, and a unique `redis_prefix` whose keys are deleted afterwards.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use herald::{
    config::{Config, Secret},
    proto::{
        CreateApiKeyRequest, CreateEndpointRequest, CreateTenantRequest, DeleteEndpointRequest,
        Role, admin_service_client::AdminServiceClient,
        endpoint_service_client::EndpointServiceClient,
    },
    server::Running,
};
use serde::Serialize;
use tokio::runtime::Handle;
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

use crate::scenarios::EndpointSpec;

/// Where Herald is and how the harness reached it.
pub struct Target {
    pub uri: String,
    pub admin_key: String,
    /// Whose `/proc` to read: `None` for this process (in-process), or `--pid`.
    pub pid: Option<u32>,
    pub in_process: bool,
    pub redis_url: Option<String>,
    pub description: Backend,
    running: Option<Running>,
    redis_prefix: Option<String>,
    /// The in-process Herald's database is a temporary file, gone after the run.
    temporary_database: bool,
    _dir: Option<tempfile::TempDir>,
}

/// What the report says about the backend.
#[derive(Clone, Debug, Serialize)]
pub struct Backend {
    /// `in-process` or `remote`.
    pub herald: &'static str,
    /// `sqlite`, `postgres`, or `unknown` (remote).
    pub database: &'static str,
    /// `memory`, `redis`, or `unknown` (remote).
    pub queue: &'static str,
}

/// What starting an in-process Herald needs.
pub struct InProcess {
    pub runtime: Handle,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub config_file: Option<PathBuf>,
}

/// A tenant made for this run, with one key per role the harness uses.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub id: String,
    pub publisher: String,
    pub manager: String,
    pub subscriber: String,
}

/// `msg` with `authorization: Bearer <key>`.
pub fn authed<T>(key: &MetadataValue<tonic::metadata::Ascii>, msg: T) -> Request<T> {
    let mut request = Request::new(msg);
    request.metadata_mut().insert("authorization", key.clone());
    request
}

/// The `authorization` value for `key`.
pub fn bearer(key: &str) -> anyhow::Result<MetadataValue<tonic::metadata::Ascii>> {
    format!("Bearer {key}")
        .parse()
        .context("API keys are ASCII")
}

/// A new HTTP/2 connection to Herald.
pub async fn connect(uri: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(uri.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to Herald at {uri}"))
}

impl Target {
    /// A Herald that is already running.
    pub fn remote(
        addr: &str,
        admin_key: String,
        pid: Option<u32>,
        redis_url: Option<String>,
    ) -> Target {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        Target {
            uri,
            admin_key,
            pid,
            in_process: false,
            redis_url,
            description: Backend {
                herald: "remote",
                database: "unknown",
                queue: "unknown",
            },
            running: None,
            redis_prefix: None,
            temporary_database: false,
            _dir: None,
        }
    }

    /// Starts Herald in this process, on `opts.runtime`.
    pub async fn start(opts: InProcess) -> anyhow::Result<Target> {
        let mut config = Config::load(opts.config_file.as_deref())?;
        let dir = tempfile::tempdir()?;
        let temporary_database = opts.database_url.is_none();
        let database_url = opts.database_url.unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("herald.db").display()
            )
        });
        let run = ulid::Ulid::new().to_string().to_lowercase();
        let admin_key = format!("bench-admin-{run}");
        let redis_prefix = opts
            .redis_url
            .as_ref()
            .map(|_| format!("herald-bench-{run}"));
        let description = Backend {
            herald: "in-process",
            database: if database_url.starts_with("sqlite:") {
                "sqlite"
            } else {
                "postgres"
            },
            queue: if opts.redis_url.is_some() {
                "redis"
            } else {
                "memory"
            },
        };
        config.listen_addr = ([127, 0, 0, 1], 0).into();
        config.database_url = Secret::new(database_url);
        config.admin_key = Some(Secret::new(admin_key.clone()));
        config.allow_http_endpoints = true;
        let loopback = "127.0.0.1/32".parse()?;
        if !config.egress_allow_cidrs.contains(&loopback) {
            config.egress_allow_cidrs.push(loopback);
        }
        config.redis_url = opts.redis_url.clone().map(Secret::new);
        if let Some(prefix) = &redis_prefix {
            config.redis_prefix = prefix.clone();
        }
        let running = opts
            .runtime
            .spawn(herald::server::start(config))
            .await?
            .context("in-process Herald did not start")?;
        Ok(Target {
            uri: format!("http://{}", running.addr),
            admin_key,
            pid: None,
            in_process: true,
            redis_url: opts.redis_url,
            description,
            running: Some(running),
            redis_prefix,
            temporary_database,
            _dir: Some(dir),
        })
    }

    /// Creates a tenant and its publisher, manager and subscriber keys.
    pub async fn create_tenant(&self) -> anyhow::Result<Tenant> {
        let admin_key = bearer(&self.admin_key)?;
        let mut admin = AdminServiceClient::new(connect(&self.uri).await?);
        let id = format!("bench-{}", ulid::Ulid::new().to_string().to_lowercase());
        admin
            .create_tenant(authed(
                &admin_key,
                CreateTenantRequest {
                    id: id.clone(),
                    name: "herald-bench".into(),
                },
            ))
            .await
            .context("CreateTenant (is the admin key right?)")?;
        let mut key = async |role: Role| -> anyhow::Result<String> {
            Ok(admin
                .create_api_key(authed(
                    &admin_key,
                    CreateApiKeyRequest {
                        tenant_id: id.clone(),
                        role: role as i32,
                        name: format!("herald-bench {}", role.as_str_name()),
                    },
                ))
                .await
                .context("CreateApiKey")?
                .into_inner()
                .secret)
        };
        Ok(Tenant {
            publisher: key(Role::Publisher).await?,
            manager: key(Role::Manager).await?,
            subscriber: key(Role::Subscriber).await?,
            id,
        })
    }

    /// Creates `specs` (16 at a time), endpoint `i` at `url(i)`; returns their ids in order.
    pub async fn create_endpoints(
        &self,
        tenant: &Tenant,
        specs: &[EndpointSpec],
        url: impl Fn(usize) -> String,
    ) -> anyhow::Result<Vec<String>> {
        use futures::{StreamExt, TryStreamExt};
        let key = bearer(&tenant.manager)?;
        let client = EndpointServiceClient::new(connect(&self.uri).await?);
        futures::stream::iter(specs.iter().enumerate())
            .map(|(i, spec)| {
                let mut client = client.clone();
                let request = authed(
                    &key,
                    CreateEndpointRequest {
                        url: url(i),
                        filters: spec.filters.clone(),
                        description: format!("herald-bench endpoint {i}"),
                        retry_schedule_secs: spec.retry_schedule_secs.clone(),
                        ..Default::default()
                    },
                );
                async move {
                    let response = client
                        .create_endpoint(request)
                        .await
                        .with_context(|| format!("CreateEndpoint {i}"))?;
                    Ok::<_, anyhow::Error>(
                        response
                            .into_inner()
                            .endpoint
                            .map(|e| e.id)
                            .unwrap_or_default(),
                    )
                }
            })
            .buffered(16)
            .try_collect()
            .await
    }

    /// Deletes the endpoints (their pending deliveries go with them), so that a Herald
    /// that outlives the run does not retry into a receiver that is gone.
    pub async fn delete_endpoints(&self, tenant: &Tenant, ids: &[String]) -> anyhow::Result<()> {
        use futures::{StreamExt, TryStreamExt};
        let key = bearer(&tenant.manager)?;
        let client = EndpointServiceClient::new(connect(&self.uri).await?);
        futures::stream::iter(ids)
            .map(|id| {
                let mut client = client.clone();
                let request = authed(
                    &key,
                    DeleteEndpointRequest {
                        id: id.clone(),
                        ..Default::default()
                    },
                );
                async move { client.delete_endpoint(request).await.map(|_| ()) }
            })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await
            .context("DeleteEndpoint")
    }

    /// Whether the database outlives the run (anything but the temporary SQLite file).
    pub fn keeps_data(&self) -> bool {
        !self.temporary_database
    }

    /// Stops an in-process Herald and deletes its Redis keys.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(running) = self.running.take() {
            let token = running.shutdown_token();
            token.cancel();
            if tokio::time::timeout(Duration::from_secs(10), running.wait())
                .await
                .is_err()
            {
                tracing::warn!("in-process Herald took more than 10 s to stop");
            }
        }
        if let (Some(url), Some(prefix)) = (&self.redis_url, &self.redis_prefix) {
            delete_redis_prefix(url, prefix).await?;
        }
        Ok(())
    }
}

/// Deletes every key containing `prefix` (SCAN, not KEYS: Redis may be shared).
async fn delete_redis_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
