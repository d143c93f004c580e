//! Configuration: built-in defaults, then an optional TOML file, then `HERALD_*`
//! environment variables (`DATABASE_URL` too, when `HERALD_DATABASE_URL` is not set).
//!
//! Unknown keys and invalid values stop start-up with a message naming the key.

use std::{fmt, net::SocketAddr, path::Path};

use figment::{
    Figment,
    providers::{Format, Toml},
};
use serde::{Deserialize, Serialize};

use crate::roles::Roles;

/// A value that must never reach a log: `Debug` and `Serialize` print `"<redacted>"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    /// Accepts numbers and booleans as text too: environment values are typed by their
    /// look (`HERALD_ADMIN_KEY=1234...` arrives as a number), but a secret is a string.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        d.deserialize_any(Text).map(Secret)
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `tracing`'s human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the span fields (request and delivery ids).
    Json,
}

/// An address, or nothing when absent or empty (so that `HERALD_METRICS_ADDR=` turns off
/// a listener the file configured).
fn optional_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(addr) => addr.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("'{addr}' is not an address such as 0.0.0.0:9090"))
        }),
    }
}

/// Herald's settings. Every field has a default; see the README's configuration table.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the gRPC server.
    pub listen_addr: SocketAddr,
    /// `sqlite://path?mode=rwc` (the embedded default) or `postgres://...`.
    pub database_url: Secret,
    /// Run pending migrations at start-up.
    pub run_migrations: bool,
    /// The bootstrap admin key; when unset and the store has no admin key, one is
    /// generated and printed once.
    pub admin_key: Option<Secret>,
    /// Largest accepted payload, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// Seconds between heartbeats on an idle tail.
    pub heartbeat_interval_secs: u64,
    /// Events a tail may fall behind the live feed before it goes back to storage.
    pub tail_buffer: usize,
    /// How long an idempotency key dedupes a publish, in seconds.
    pub idempotency_window_secs: u64,
    /// Accept `http://` endpoint URLs (https is required otherwise).
    pub allow_http_endpoints: bool,
    /// Seconds an endpoint's previous secret keeps signing after a rotation.
    pub secret_rotation_grace_secs: u64,
    /// Log filter, in `tracing` env-filter syntax (e.g. `info,herald=debug`).
    pub log: String,
    /// Log lines as human-readable text or as JSON objects, one per line.
    pub log_format: LogFormat,
    /// Address of the Prometheus `/metrics` listener; unset (or empty) means none.
    #[serde(deserialize_with = "optional_addr")]
    pub metrics_addr: Option<SocketAddr>,
    /// `redis://...`: use Redis as the delivery queue; unset means the in-process queue.
    /// A Redis Cluster: its seed nodes' URLs, comma-separated, or one `redis+cluster://`.
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key Herald uses (several Heralds can share one Redis).
    pub redis_prefix: String,
    /// Networks webhooks may reach although they are internal (e.g. `["10.0.0.0/8"]`).
    pub egress_allow_cidrs: Vec<ipnet::IpNet>,
    /// Seconds one webhook attempt may take, connection to last body byte.
    pub webhook_timeout_secs: u64,
    /// Bytes of a receiver's response body kept in the delivery log.
    pub response_body_limit: usize,
    /// Delays between attempts, in seconds: the first retry waits `[0]`, and so on.
    pub retry_schedule_secs: Vec<u32>,
    /// Attempts in flight at once to one endpoint, at first and at least.
    pub endpoint_concurrency: usize,
    /// The most attempts in flight to one endpoint: its limit grows from
    /// `endpoint_concurrency` towards this while its requests succeed and deliveries wait,
    /// and halves on each failure. Equal to `endpoint_concurrency` (or lower): a fixed
    /// limit. Never above `delivery_concurrency`.
    pub endpoint_concurrency_max: usize,
    /// Attempts in flight at once in this process.
    pub delivery_concurrency: usize,
    /// Disable an endpoint whose attempts all failed for this many seconds (0: never).
    pub auto_disable_after_secs: u64,
    /// Days events, deliveries and attempts are kept (0: forever).
    pub retention_days: u32,
    /// Seconds a due delivery may be overdue before the reconciler assumes the queue lost
    /// it and enqueues it again.
    pub requeue_after_secs: u64,
    /// Most retries the Redis schedule holds (the earliest due); the rest wait in the
    /// database until there is room, so a receiver that is down for long costs Redis a
    /// bounded ~180 bytes per retry held. 0: unbounded.
    pub redis_max_scheduled: u64,
    /// What this process runs: the API, the delivery worker, or both (`--api`/`--worker`).
    pub roles: Roles,
    /// Seconds a delivery a worker took stays its own (queue lease and database claim):
    /// a crashed replica's deliveries are retried by the others this much later. Unset:
    /// `webhook_timeout_secs` + 15.
    pub delivery_lease_secs: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_addr: ([127, 0, 0, 1], 50051).into(),
            database_url: Secret::new("sqlite://herald.db?mode=rwc"),
            run_migrations: true,
            admin_key: None,
            max_payload_bytes: 256 * 1024,
            heartbeat_interval_secs: 15,
            tail_buffer: 4096,
            idempotency_window_secs: 24 * 3600,
            allow_http_endpoints: false,
            secret_rotation_grace_secs: 24 * 3600,
            log: "info".into(),
            log_format: LogFormat::Text,
            metrics_addr: None,
            redis_url: None,
            redis_prefix: "herald".into(),
            egress_allow_cidrs: Vec::new(),
            webhook_timeout_secs: 15,
            response_body_limit: 4096,
            // Immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h:
            // about three days, as Standard Webhooks recommends.
            retry_schedule_secs: vec![5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400],
            endpoint_concurrency: 16,
            endpoint_concurrency_max: 128,
            delivery_concurrency: 256,
            auto_disable_after_secs: 5 * 24 * 3600,
            retention_days: 30,
            requeue_after_secs: 120,
            redis_max_scheduled: crate::queue::redis::DEFAULT_MAX_SCHEDULED,
            roles: Roles::ALL,
            delivery_lease_secs: None,
        }
    }
}

/// The `HERALD_*` variables of an environment, as figment's `Env::prefixed("HERALD_")`
/// reads them (prefix stripped, key lower-cased, value parsed as a figment value), but from
/// any list of variables, so that a deployment file's can be checked as Herald reads them.
struct HeraldVars(figment::value::Dict);

impl From<&Vec<(String, String)>> for HeraldVars {
    fn from(vars: &Vec<(String, String)>) -> Self {
        let mut dict = figment::value::Dict::new();
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("HERALD_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            // HERALD_CONFIG names the file itself, so it is not a key.
            if key.is_empty() || key == "config" {
                continue;
            }
            let value: figment::value::Value = value
                .parse()
                .unwrap_or_else(|_| figment::value::Value::from(value.clone()));
            dict.insert(key, value);
        }
        HeraldVars(dict)
    }
}

impl figment::Provider for HeraldVars {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("`HERALD_` environment variable(s)")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.0.clone()))
    }
}

impl Config {
    /// The most attempts in flight to one endpoint, as the worker applies it: between
    /// `endpoint_concurrency` and `delivery_concurrency`, whatever the settings combine to.
    pub fn effective_endpoint_concurrency_max(&self) -> usize {
        self.endpoint_concurrency_max
            .max(self.endpoint_concurrency)
            .min(self.delivery_concurrency)
    }

    /// Loads the layered configuration; `file` is the optional TOML file.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        // `vars_os`: a variable that is not UTF-8 (none of ours can be) must not panic.
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Config::load_from(file, vars)
    }

    /// [`Config::load`] with the environment given as `vars` instead of the process's:
    /// what a deployment file's variables would make of Herald (the compose test uses it).
    pub fn load_from(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        // Missing keys take `Config::default()` through `#[serde(default)]`; the defaults
        // are not merged as a provider because `Secret` serialises redacted.
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("configuration file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        let var = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        if var("HERALD_DATABASE_URL").is_none()
            && let Some(url) = var("DATABASE_URL")
        {
            figment = figment.merge(("database_url", url.as_str()));
        }
        figment = figment.merge(HeraldVars::from(&vars));
        let config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let url = self.database_url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            anyhow::bail!(
                "invalid configuration: database_url must start with sqlite:, postgres:// or postgresql://"
            );
        }
        if let Some(key) = &self.admin_key
            && key.expose().len() < 16
        {
            anyhow::bail!("invalid configuration: admin_key must be at least 16 characters");
        }
        if self.max_payload_bytes < 1024 {
            anyhow::bail!("invalid configuration: max_payload_bytes must be at least 1024");
        }
        if self.heartbeat_interval_secs == 0 {
            anyhow::bail!("invalid configuration: heartbeat_interval_secs must be at least 1");
        }
        if let Some(url) = &self.redis_url
            && let Err(e) = crate::redis_conn::Target::parse(url.expose())
        {
            anyhow::bail!("invalid configuration: redis_url: {e}");
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(['{', '}', ' ']) {
            anyhow::bail!(
                "invalid configuration: redis_prefix must be non-empty, without braces or spaces"
            );
        }
        if self.webhook_timeout_secs == 0 || self.webhook_timeout_secs > 300 {
            anyhow::bail!("invalid configuration: webhook_timeout_secs must be 1 to 300");
        }
        if self.retry_schedule_secs.len() > 50 {
            anyhow::bail!("invalid configuration: retry_schedule_secs holds at most 50 delays");
        }
        if self.endpoint_concurrency == 0 || self.delivery_concurrency < self.endpoint_concurrency {
            anyhow::bail!(
                "invalid configuration: endpoint_concurrency must be at least 1 and at most delivery_concurrency"
            );
        }
        if self.redis_max_scheduled != 0 && self.redis_max_scheduled < 100 {
            anyhow::bail!(
                "invalid configuration: redis_max_scheduled must be 0 (unbounded) or at least 100"
            );
        }
        if self.requeue_after_secs < self.webhook_timeout_secs {
            anyhow::bail!(
                "invalid configuration: requeue_after_secs must be at least webhook_timeout_secs"
            );
        }
        if let Some(metrics) = self.metrics_addr
            && metrics.port() != 0
            && metrics.port() == self.listen_addr.port()
            && (metrics.ip() == self.listen_addr.ip()
                || metrics.ip().is_unspecified()
                || self.listen_addr.ip().is_unspecified())
        {
            anyhow::bail!("invalid configuration: metrics_addr must differ from listen_addr");
        }
        if self.tail_buffer < 16 {
            anyhow::bail!("invalid configuration: tail_buffer must be at least 16");
        }
        // A worker sends only while its claim outlasts the request's timeout by a second
        // (`delivery::worker`), and a second may pass between the claim and the send: a
        // shorter lease would leave every delivery unsent.
        if let Some(lease) = self.delivery_lease_secs
            && (lease < self.webhook_timeout_secs.saturating_add(2) || lease > 3600)
        {
            anyhow::bail!(
                "invalid configuration: delivery_lease_secs must be at least webhook_timeout_secs + 2 (an attempt must be sent and recorded within it) and at most 3600"
            );
        }
        self.check_roles()?;
        Ok(())
    }

    /// The roles against the queue (also checked by `server::start`, which tests call
    /// with a hand-built configuration).
    pub fn check_roles(&self) -> anyhow::Result<()> {
        self.roles
            .check(self.redis_url.is_some())
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
    }

    /// This configuration with the roles of the command line (`--api`, `--worker`), which
    /// win over the file and the environment; validated again.
    pub fn with_roles(mut self, roles: Roles) -> anyhow::Result<Config> {
        self.roles = roles;
        self.validate()?;
        Ok(self)
    }

    /// The configuration as JSON with secrets redacted, for the start-up log.
    pub fn redacted(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let config = Config {
            admin_key: Some(Secret::new("super-secret-admin-key")),
            ..Config::default()
        };
        let shown = config.redacted();
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(!format!("{config:?}").contains("super-secret"));
    }

    fn from_vars(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        Config::load_from(
            None,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn observability_keys() {
        let config = from_vars(&[]).unwrap();
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.metrics_addr, None);

        let config = from_vars(&[
            ("HERALD_LOG_FORMAT", "json"),
            ("HERALD_METRICS_ADDR", "0.0.0.0:9090"),
        ])
        .unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.metrics_addr, Some(([0, 0, 0, 0], 9090).into()));
        assert_eq!(
            from_vars(&[("HERALD_METRICS_ADDR", "")])
                .unwrap()
                .metrics_addr,
            None
        );

        let err = from_vars(&[("HERALD_LOG_FORMAT", "xml")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("log_format"), "{err}");
        let err = from_vars(&[("HERALD_METRICS_ADDR", "9090")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics_addr"), "{err}");
        let err = from_vars(&[("HERALD_METRICS_ADDR", "localhost")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics_addr"), "{err}");
        let err = from_vars(&[
            ("HERALD_LISTEN_ADDR", "0.0.0.0:9090"),
            ("HERALD_METRICS_ADDR", "127.0.0.1:9090"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("metrics_addr must differ from listen_addr"),
            "{err}"
        );
    }

    #[test]
    fn file_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "listen_addr = \"127.0.0.1:6000\"\nmax_payload_bytes = 4096\n",
        )
        .unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.listen_addr.port(), 6000);
        assert_eq!(config.max_payload_bytes, 4096);

        std::fs::write(&path, "listen_adr = \"127.0.0.1:6000\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("listen_adr"), "{err}");

        std::fs::write(&path, "max_payload_bytes = \"lots\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("max_payload_bytes"), "{err}");
    }

    fn env(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        Config::load_from(
            None,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn roles_come_from_the_environment_and_are_checked() {
        let redis = ("HERALD_REDIS_URL", "redis://127.0.0.1:6379");
        assert_eq!(env(&[]).unwrap().roles, Roles::ALL);
        let worker = env(&[redis, ("HERALD_ROLES", "worker")]).unwrap().roles;
        assert!(worker.worker && !worker.api);
        let both = env(&[redis, ("HERALD_ROLES", "[api, worker]")]).unwrap();
        assert_eq!(both.roles, Roles::ALL);
        assert!(both.redacted().contains(r#""roles":"api,worker""#));

        let err = env(&[("HERALD_ROLES", "api")]).unwrap_err().to_string();
        assert!(err.contains("roles") && err.contains("redis_url"), "{err}");
        let err = env(&[redis, ("HERALD_ROLES", "[]")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("roles"), "{err}");
        let err = env(&[redis, ("HERALD_ROLES", "apis")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("roles") && err.contains("apis"), "{err}");

        let split = Roles {
            api: true,
            worker: false,
        };
        assert!(env(&[]).unwrap().with_roles(split).is_err());
        assert!(env(&[redis]).unwrap().with_roles(split).is_ok());
    }

    /// The adaptive limit's ceiling never rejects a start: it is raised to the starting
    /// limit and lowered to the process's, whichever settings a deployment changed.
    #[test]
    fn endpoint_concurrency_max_fits_the_other_limits() {
        let max = |vars: &[(&str, &str)]| env(vars).unwrap().effective_endpoint_concurrency_max();
        assert_eq!(max(&[]), 128);
        assert_eq!(max(&[("HERALD_DELIVERY_CONCURRENCY", "64")]), 64);
        assert_eq!(max(&[("HERALD_ENDPOINT_CONCURRENCY", "200")]), 200);
        assert_eq!(max(&[("HERALD_ENDPOINT_CONCURRENCY_MAX", "16")]), 16);
        assert_eq!(
            max(&[
                ("HERALD_ENDPOINT_CONCURRENCY", "32"),
                ("HERALD_ENDPOINT_CONCURRENCY_MAX", "8")
            ]),
            32
        );
        let err = env(&[("HERALD_REDIS_MAX_SCHEDULED", "10")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis_max_scheduled"), "{err}");
    }

    #[test]
    fn redis_url_names_one_server_or_a_cluster() {
        let url = |v| env(&[("HERALD_REDIS_URL", v)]);
        for ok in [
            "redis://127.0.0.1:6379",
            "redis+cluster://:pw@10.0.0.1:7000",
            "redis://10.0.0.1:7000,redis://10.0.0.2:7000",
        ] {
            assert!(url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:6379",
            "redis://:secret-pw@10.0.0.1:7000,",
            "redis+cluster://:secret-pw@10.0.0.1:7000/1",
        ] {
            let err = url(bad).unwrap_err().to_string();
            assert!(err.contains("redis_url"), "{err}");
            assert!(!err.contains("secret-pw"), "{err}");
        }
    }

    #[test]
    fn delivery_lease_must_outlast_an_attempt() {
        let lease = |v| env(&[("HERALD_DELIVERY_LEASE_SECS", v)]);
        assert_eq!(lease("20").unwrap().delivery_lease_secs, Some(20));
        // The default webhook_timeout_secs is 15.
        assert_eq!(lease("17").unwrap().delivery_lease_secs, Some(17));
        for short in ["15", "16"] {
            let err = lease(short).unwrap_err().to_string();
            assert!(err.contains("delivery_lease_secs"), "{err}");
        }
    }
}
