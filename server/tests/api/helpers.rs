//! `spawn_app()`: a real Herald on port 0 with its own database (a fresh SQLite file,
//! or a fresh PostgreSQL database on 127.0.0.1:5432), and typed clients for it.

#![allow(dead_code)]

use std::time::Duration;

use herald::{
    config::{Config, Secret},
    proto::{
        self, CreateApiKeyRequest, CreateTenantRequest, Role,
        admin_service_client::AdminServiceClient, endpoint_service_client::EndpointServiceClient,
        event_service_client::EventServiceClient,
    },
    server::{self, Running},
};
use sea_orm::{ConnectionTrait, Database};
use tonic::{Request, transport::Channel};

/// Which storage a test runs against: SQLite with the in-process queue (the embedded
/// default), or PostgreSQL with the Redis queue (production).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Redis of the tests; override with HERALDTEST_REDIS_URL.
pub fn redis_url() -> String {
    std::env::var("HERALDTEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Server of PostgreSQL tests; override with HERALDTEST_POSTGRES_URL (no database part).
pub fn postgres_server() -> String {
    std::env::var("HERALDTEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// The `/metrics` listener, when the test set `metrics_addr`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub admin_key: String,
    pub backend: Backend,
    pub config: Config,
    pub redis_prefix: Option<String>,
    running: Option<Running>,
    _dir: tempfile::TempDir,
    pg_database: Option<String>,
}

/// Starts Herald with test defaults: http endpoints allowed, webhooks may reach
/// 127.0.0.1, 1 s heartbeats, retries after 1 s and 2 s, a 3 s request timeout.
/// A fresh PostgreSQL database for one test: its name and URL.
pub async fn create_pg_database() -> (String, String) {
    let name = format!(
        "herald_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let admin = Database::connect(format!("{}/postgres", postgres_server()))
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (set HERALDTEST_POSTGRES_URL)");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    admin.close().await.ok();
    let url = format!("{}/{name}", postgres_server());
    (name, url)
}

/// Polls `check` every 100 ms until it returns `Ok`, panicking with its last `Err` after
/// `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if std::time::Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last seen: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Starts Herald after `tweak` adjusts the test configuration.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let (database_url, pg_database) = match backend {
        Backend::Sqlite => (
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("herald.db").display()
            ),
            None,
        ),
        Backend::Postgres => {
            let (name, url) = create_pg_database().await;
            (url, Some(name))
        }
    };
    let admin_key = format!("test-admin-{}", ulid::Ulid::new());
    let redis_prefix = (backend == Backend::Postgres).then(|| {
        format!(
            "herald-test-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        )
    });
    let mut config = Config {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        database_url: Secret::new(database_url),
        admin_key: Some(Secret::new(admin_key.clone())),
        allow_http_endpoints: true,
        heartbeat_interval_secs: 1,
        egress_allow_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        retry_schedule_secs: vec![1, 2],
        webhook_timeout_secs: 3,
        requeue_after_secs: 5,
        redis_url: redis_prefix.as_ref().map(|_| Secret::new(redis_url())),
        redis_prefix: redis_prefix.clone().unwrap_or_else(|| "herald".into()),
        ..Config::default()
    };
    tweak(&mut config);
    let running = server::start(config.clone()).await.expect("server starts");
    TestApp {
        addr: running.addr,
        metrics_addr: running.metrics_addr,
        admin_key,
        backend,
        config,
        redis_prefix,
        running: Some(running),
        _dir: dir,
        pg_database,
    }
}

/// `msg` with `authorization: Bearer <key>`.
pub fn authed<T>(key: &str, msg: T) -> Request<T> {
    let mut request = Request::new(msg);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii key"),
    );
    request
}

/// A tenant with one key per role.
#[derive(Clone, Debug)]
pub struct TenantKeys {
    pub tenant_id: String,
    pub publisher: String,
    pub subscriber: String,
    pub manager: String,
}

impl TestApp {
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to test server")
    }

    pub async fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel().await)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    pub async fn endpoints(&self) -> EndpointServiceClient<Channel> {
        EndpointServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// Creates tenant `id` and a publisher, a subscriber and a manager key for it.
    pub async fn tenant(&self, id: &str) -> TenantKeys {
        let mut admin = self.admin().await;
        admin
            .create_tenant(authed(
                &self.admin_key,
                CreateTenantRequest {
                    id: id.into(),
                    name: format!("Tenant {id}"),
                },
            ))
            .await
            .expect("create tenant");
        let key = |role: Role| {
            let mut admin = admin.clone();
            let admin_key = self.admin_key.clone();
            let tenant_id = id.to_string();
            async move {
                admin
                    .create_api_key(authed(
                        &admin_key,
                        CreateApiKeyRequest {
                            tenant_id,
                            role: role as i32,
                            name: format!("{role:?}"),
                        },
                    ))
                    .await
                    .expect("create key")
                    .into_inner()
                    .secret
            }
        };
        TenantKeys {
            tenant_id: id.into(),
            publisher: key(Role::Publisher).await,
            subscriber: key(Role::Subscriber).await,
            manager: key(Role::Manager).await,
        }
    }

    /// Stops the server gracefully.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }

    /// Starts the server again on the same database and Redis prefix (a new port:
    /// reconnect clients). Stops it first if it runs.
    pub async fn restart(&mut self) {
        self.stop().await;
        let running = server::start(self.config.clone())
            .await
            .expect("server restarts");
        self.addr = running.addr;
        self.metrics_addr = running.metrics_addr;
        self.running = Some(running);
    }

    /// Another replica of this app: a second server on the same database and Redis
    /// prefix (its own port). The database and keys stay this app's to clean up.
    pub async fn replica(&self) -> TestApp {
        let running = server::start(self.config.clone())
            .await
            .expect("replica starts");
        TestApp {
            addr: running.addr,
            admin_key: self.admin_key.clone(),
            backend: self.backend,
            config: self.config.clone(),
            redis_prefix: None,
            metrics_addr: running.metrics_addr,
            running: Some(running),
            _dir: tempfile::tempdir().expect("temp dir"),
            pg_database: None,
        }
    }

    /// The PostgreSQL database of a PostgreSQL-backed app.
    pub fn pg_database(&self) -> Option<&str> {
        self.pg_database.as_deref()
    }

    /// Deletes every Redis key of this app's queue: Redis "losing its data".
    pub async fn flush_redis(&self) {
        let prefix = self.redis_prefix.as_ref().expect("a Redis-backed app");
        delete_redis_keys(prefix).await;
    }
}

async fn delete_redis_keys(prefix: &str) {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379 (set HERALDTEST_REDIS_URL)");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown_token().cancel();
        }
        clean_up_blocking(self.pg_database.take(), self.redis_prefix.take());
    }
}

/// Deletes a test's Redis keys and drops its PostgreSQL database (`FORCE` ends the
/// sessions of a server still shutting down, or of a killed replica). Best effort, on a
/// runtime of its own: for `Drop`, which cannot await.
pub fn clean_up_blocking(pg_database: Option<String>, redis_prefix: Option<String>) {
    if pg_database.is_none() && redis_prefix.is_none() {
        return;
    }
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            if let Some(prefix) = redis_prefix {
                delete_redis_keys(&prefix).await;
            }
            let name = pg_database?;
            let admin = Database::connect(format!("{}/postgres", postgres_server()))
                .await
                .ok()?;
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .ok()?;
            admin.close().await.ok()
        })
    })
    .join();
}

/// A SQLite database file of its own in `dir`, created on first connect.
pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/herald.db?mode=rwc", dir.path().display())
}

/// A migrated store on a database of its own, and what to drop or delete after.
pub enum Fresh {
    Postgres(String),
    Sqlite { _dir: tempfile::TempDir },
}

pub async fn fresh_store(postgres: bool) -> (herald::store::Store, Fresh) {
    let (url, fresh) = if postgres {
        let (name, url) = create_pg_database().await;
        (url, Fresh::Postgres(name))
    } else {
        let dir = tempfile::tempdir().unwrap();
        (sqlite_url(&dir), Fresh::Sqlite { _dir: dir })
    };
    let store = herald::store::Store::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, fresh)
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Fresh::Postgres(name) = self {
            clean_up_blocking(Some(std::mem::take(name)), None);
        }
    }
}

/// A tenant `tnt_{name}` with one endpoint at `url`, made through the store: the ids of
/// both, for tests that write their own rows beside them.
pub async fn store_tenant_with_endpoint(
    store: &herald::store::Store,
    name: &str,
    url: &str,
) -> (String, String) {
    let tenant = store
        .create_tenant(format!("tnt_{name}"), name.into())
        .await
        .expect("tenant");
    let (endpoint, _) = store
        .create_endpoint(&tenant.id, store_endpoint(url, &[]))
        .await
        .expect("endpoint");
    (tenant.id, endpoint.id)
}

/// Writes an event `event_id` of `tenant` and one delivery of it, `delivery_id`, to
/// `endpoint`: never attempted, due now, as a publish leaves it.
pub async fn insert_pending_delivery(
    db: &impl ConnectionTrait,
    (tenant, endpoint): (&str, &str),
    event_id: &str,
    delivery_id: &str,
) {
    let now = herald::time::now_micros();
    db.execute_unprepared(&format!(
        "INSERT INTO events (seq, id, tenant_id, event_type, environment, occurred_at,
                             received_at, payload)
         VALUES (1, '{event_id}', '{tenant}', 'license.created', '', {now}, {now}, '{{}}');
         INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type,
                                 idempotency_token, status, attempts, next_attempt_at,
                                 created_at, updated_at)
         VALUES ('{delivery_id}', '{tenant}', '{event_id}', '{endpoint}', 'license.created',
                 'tok', 'DELIVERING', 0, {now}, {now}, {now})"
    ))
    .await
    .expect("an event and its delivery");
}

/// An enabled Keygen-format endpoint at `url` taking `filters`, for tests that create one
/// through the store rather than the API.
pub fn store_endpoint(url: &str, filters: &[&str]) -> herald::store::endpoints::EndpointFields {
    herald::store::endpoints::EndpointFields {
        url: url.into(),
        filters: filters.iter().map(|f| f.to_string()).collect(),
        enabled: true,
        disabled_reason: String::new(),
        description: String::new(),
        metadata: Default::default(),
        environment: String::new(),
        format: "keygen".into(),
        schemes: vec!["keygen".into()],
        keygen_algorithm: "ed25519".into(),
        retry_schedule: Vec::new(),
    }
}

/// A Keygen-style JSON:API payload for `event_type`, as JSON text.
pub fn payload_for(event_type: &str, id: &str) -> String {
    let info = herald::catalog::catalog()
        .by_name(event_type)
        .expect("catalog event");
    let resource = serde_json::json!({
        "id": id,
        "type": info.resource_type,
        "attributes": { "name": format!("resource {id}"), "created": "2026-11-27T00:00:00Z" },
        "relationships": { "account": { "data": { "type": "accounts", "id": "acct" } } }
    });
    let data = if info.is_list() {
        serde_json::json!([resource])
    } else {
        resource
    };
    serde_json::json!({ "data": data }).to_string()
}

/// Creates an endpoint at `url` with the tenant's manager key; returns its id.
pub async fn endpoint(app: &TestApp, keys: &TenantKeys, url: String) -> String {
    app.endpoints()
        .await
        .create_endpoint(authed(
            &keys.manager,
            proto::CreateEndpointRequest {
                url,
                ..Default::default()
            },
        ))
        .await
        .expect("create endpoint")
        .into_inner()
        .endpoint
        .expect("an endpoint")
        .id
}

/// Publishes one `license.created` event about resource `id` with the publisher key.
pub async fn publish_license(app: &TestApp, keys: &TenantKeys, id: &str) -> proto::Event {
    app.events()
        .await
        .publish(authed(
            &keys.publisher,
            publish_request("license.created", id),
        ))
        .await
        .expect("publish")
        .into_inner()
        .event
        .expect("the stored event")
}

/// A publish request of `event_type` for the key's tenant.
/// `GetEvent` of `id` with `key`, on a fresh client.
pub async fn get_event(app: &TestApp, key: &str, id: &str) -> Result<proto::Event, tonic::Status> {
    app.events()
        .await
        .get_event(authed(
            key,
            proto::GetEventRequest {
                id: id.into(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner())
}

pub fn publish_request(event_type: &str, id: &str) -> proto::PublishRequest {
    proto::PublishRequest {
        type_name: event_type.into(),
        payload_json: payload_for(event_type, id),
        ..Default::default()
    }
}

/// Runs each listed `async fn(Backend)` once against SQLite and once against PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}
