//! Assembles and runs the gRPC server: storage, the writer, the live bus, the three
//! Herald services, health and reflection (v1 and v1alpha, for grpcurl 1.8).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::{
    api::{admin::AdminApi, deliveries::DeliveryApi, endpoints::EndpointApi, events::EventApi},
    bus::Bus,
    config::Config,
    delivery::{
        handoff::Handoff,
        reconciler::Reconciler,
        retention::Pruner,
        retry::RetryPolicy,
        worker::{Worker, WorkerConfig},
    },
    egress::{client::Sender, ssrf},
    lease::BackgroundLease,
    proto::{
        self, admin_service_server::AdminServiceServer,
        delivery_service_server::DeliveryServiceServer,
        endpoint_service_server::EndpointServiceServer, event_service_server::EventServiceServer,
    },
    publish::Writer,
    queue::{Queue, memory::MemoryQueue, redis::RedisQueue},
    relay,
    state::AppState,
    store::Store,
};

/// Largest gRPC message accepted: a full `PublishBatch` of typical payloads fits.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const HEALTH_PROBE_EVERY: Duration = Duration::from_secs(5);
/// The services health reports on: the API's, then the server as a whole (`""`), the
/// only one a worker-only process reports.
const HEALTH_NAMES: [&str; 5] = [
    "herald.v1.EventService",
    "herald.v1.EndpointService",
    "herald.v1.DeliveryService",
    "herald.v1.AdminService",
    "",
];
/// Health name of webhook delivery: `NOT_SERVING` while the database or the delivery
/// queue (Redis) is unreachable. The API's names follow the database only: publishes and
/// tails work without Redis (the reconciler enqueues what was missed).
pub const DELIVERY_HEALTH: &str = "herald.delivery";
/// How often the reconciler looks for deliveries the queue lost.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Extra time, beyond the request timeout, before a claimed delivery is free again.
const LEASE_MARGIN: Duration = Duration::from_secs(15);

/// A server started by [`start`].
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// The address of the `/metrics` listener, when `metrics_addr` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// The admin key generated at start-up, when none was configured or stored.
    pub generated_admin_key: Option<String>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// A token that begins a graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, ends tails, finishes in-flight calls, and waits.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after its shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.handle.await?
    }
}

/// Connects to storage, migrates, bootstraps the admin key and starts serving: the API,
/// the delivery worker and its background tasks, or one of the two (`config.roles`).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics_handle = crate::metrics::install();
    config.check_roles()?;
    let roles = config.roles;
    // Names this process in the queue's consumer group, the background lease and the logs.
    let replica = format!("{}-{}", std::process::id(), ulid::Ulid::new());
    let store = Store::connect(config.database_url.expose())
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
    if config.run_migrations {
        store.migrate().await?;
    }
    // A worker-only process has no API to use a key with, and a key it generated would be
    // printed where nobody looks for it: the API processes bootstrap.
    let generated_admin_key = if roles.api {
        bootstrap_admin(&store, &config).await?
    } else {
        None
    };
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen_addr))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics_addr {
        Some(at) => Some(crate::metrics::bind(at).await?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;

    let shutdown = CancellationToken::new();
    let timeout = Duration::from_secs(config.webhook_timeout_secs);
    let lease = config
        .delivery_lease_secs
        .map_or(timeout + LEASE_MARGIN, Duration::from_secs);
    let (queue, queue_starts_empty): (Arc<dyn Queue>, bool) = match &config.redis_url {
        Some(url) => {
            let queue = RedisQueue::connect(url.expose(), &config.redis_prefix, &replica, lease)
                .await
                .map_err(|e| anyhow::anyhow!("cannot use Redis: {e}"))?
                .with_max_scheduled(config.redis_max_scheduled);
            (Arc::new(queue), false)
        }
        None => (Arc::new(MemoryQueue::new(lease)), true),
    };
    let user_agent = format!("Herald/{}", env!("CARGO_PKG_VERSION"));
    let sender = Sender::new(
        ssrf::Policy {
            allow_http: config.allow_http_endpoints,
            allow: config.egress_allow_cidrs.clone(),
        },
        timeout,
        config.response_body_limit,
        &user_agent,
    )?;

    let mut lease_keeper = None;
    let background = if !roles.worker {
        // No background work in an API-only process, but see `Reconciler::lease`.
        BackgroundLease::never()
    } else if let Some(url) = &config.redis_url {
        let (lease, keeper) = BackgroundLease::redis(
            url.expose(),
            &config.redis_prefix,
            &replica,
            shutdown.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot use Redis: {e}"))?;
        lease_keeper = Some(keeper);
        lease
    } else {
        BackgroundLease::local()
    };
    tokio::spawn(
        Reconciler {
            store: store.clone(),
            queue: queue.clone(),
            requeue_after: Duration::from_secs(config.requeue_after_secs),
            interval: RECONCILE_EVERY,
            queue_starts_empty,
            lease: background.clone(),
        }
        .run(shutdown.clone()),
    );
    // The worker, when this process runs one: the writer hands it fresh deliveries.
    let mut local_worker = None;
    if roles.worker {
        let worker = Arc::new(Worker::new(
            store.clone(),
            queue.clone(),
            sender.clone(),
            WorkerConfig {
                concurrency: config.delivery_concurrency,
                endpoint_concurrency: config.endpoint_concurrency,
                endpoint_concurrency_max: config.effective_endpoint_concurrency_max(),
                lease,
                request_timeout: timeout,
                busy_endpoint_delay: Duration::from_secs(1),
                policy: RetryPolicy::from_secs(&config.retry_schedule_secs),
                auto_disable_after: Duration::from_secs(config.auto_disable_after_secs),
                user_agent: user_agent.clone(),
            },
        ));
        local_worker = Some(worker.clone());
        tokio::spawn(worker.run(shutdown.clone()));
        if config.retention_days > 0 {
            tokio::spawn(
                Pruner {
                    store: store.clone(),
                    retention: Duration::from_secs(u64::from(config.retention_days) * 86400),
                    interval: PRUNE_EVERY,
                    lease: background,
                }
                .run(shutdown.clone()),
            );
        }
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    // A worker-only process answers health (overall, "") but serves no API.
    let health_names: &'static [&'static str] = if roles.api {
        &HEALTH_NAMES
    } else {
        &HEALTH_NAMES[4..]
    };
    for name in health_names {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    health
        .set_service_status(DELIVERY_HEALTH, ServingStatus::Serving)
        .await;
    tokio::spawn(watch_health(
        store.clone(),
        queue.clone(),
        health,
        health_names,
        shutdown.clone(),
    ));
    tokio::spawn(crate::metrics::sample(queue.clone(), shutdown.clone()));
    if let (Some(listener), Some(handle)) = (metrics_listener, metrics_handle) {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::metrics::serve(listener, handle, stop).await {
                tracing::error!(error = %err, "metrics listener failed");
            }
        });
    }

    let mut router = tonic::transport::Server::builder()
        .layer(crate::request_id::RequestIdLayer)
        .add_service(health_service);
    let mut state = None;
    if roles.api {
        // Replicas share Redis: each one's tails must see every replica's commits.
        let bus = match &config.redis_url {
            Some(url) => relay::spawn(
                store.clone(),
                url.expose(),
                &config.redis_prefix,
                config.tail_buffer,
                shutdown.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the relay: {e}"))?,
            None => Arc::new(Bus::new(config.tail_buffer)),
        };
        let window = i64::try_from(config.idempotency_window_secs)
            .unwrap_or(i64::MAX / 1_000_000)
            .saturating_mul(1_000_000);
        let writer = Writer::spawn(
            store.clone(),
            bus.clone(),
            queue.clone(),
            local_worker.clone().map(Handoff::new),
            window,
        );
        let app = Arc::new(AppState {
            config,
            store,
            writer,
            bus,
            queue,
            sender,
            user_agent,
            shutdown: shutdown.clone(),
            credentials: Default::default(),
        });
        router = router
            .add_service(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .build_v1()?,
            )
            .add_service(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .build_v1alpha()?,
            )
            .add_service(
                EventServiceServer::new(EventApi::new(app.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                EndpointServiceServer::new(EndpointApi::new(app.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                DeliveryServiceServer::new(DeliveryApi::new(app.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                AdminServiceServer::new(AdminApi::new(app.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            );
        state = Some(app);
    }
    let stop = shutdown.clone();
    let handle = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.cancelled(),
            )
            .await?;
        drop(state);
        // Give the background lease back before the process exits, so that another
        // replica takes over now rather than when the key expires.
        if let Some(keeper) = lease_keeper {
            let _ = tokio::time::timeout(Duration::from_secs(3), keeper).await;
        }
        Ok(())
    });
    tracing::info!(%addr, metrics = ?metrics_addr, %replica, %roles, "herald listening");
    Ok(Running {
        addr,
        metrics_addr,
        generated_admin_key,
        shutdown,
        handle,
    })
}

/// Ensures the configured admin key exists, or generates one when the store has none.
async fn bootstrap_admin(store: &Store, config: &Config) -> anyhow::Result<Option<String>> {
    if let Some(key) = &config.admin_key {
        store.ensure_admin_key(key.expose()).await?;
        return Ok(None);
    }
    if store.count_active_admin_keys().await? > 0 {
        return Ok(None);
    }
    let (_, secret) = store
        .create_api_key(
            None,
            crate::auth::Role::Admin,
            "bootstrap (generated)".into(),
        )
        .await?;
    Ok(Some(secret))
}

/// Reports NOT_SERVING while the database does not answer (every name), or the delivery
/// queue does not ([`DELIVERY_HEALTH`]). Probes every few seconds; logs changes only.
async fn watch_health(
    store: Store,
    queue: Arc<dyn Queue>,
    health: tonic_health::server::HealthReporter,
    names: &'static [&'static str],
    shutdown: CancellationToken,
) {
    let (mut database_up, mut queue_up, mut delivering) = (true, true, true);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(HEALTH_PROBE_EVERY) => {}
        }
        let (database, queued) = tokio::join!(store.ping(), queue.depth());
        let (database, queued) = (database.is_ok(), queued.is_ok());
        if database != database_up {
            database_up = database;
            let status = if database {
                tracing::info!("database reachable again: reporting SERVING");
                ServingStatus::Serving
            } else {
                tracing::warn!("database unreachable: reporting NOT_SERVING");
                ServingStatus::NotServing
            };
            for name in names {
                health.set_service_status(*name, status).await;
            }
        }
        if queued != queue_up {
            queue_up = queued;
            if queued {
                tracing::info!("delivery queue reachable again");
            } else {
                tracing::warn!(
                    "delivery queue unreachable: reporting NOT_SERVING for {DELIVERY_HEALTH}"
                );
            }
        }
        if delivering != (database_up && queue_up) {
            delivering = database_up && queue_up;
            let status = if delivering {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(DELIVERY_HEALTH, status).await;
        }
    }
    for name in names.iter().chain(&[DELIVERY_HEALTH]) {
        health
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
}
