//! Configuration: built-in defaults, then an optional TOML file, then `HERALD_*`
//! environment variables (`DATABASE_URL` too, when `HERALD_DATABASE_URL` is not set).
//!
//! Unknown keys and invalid values stop start-up with a message naming the key.

use std::{fmt, net::SocketAddr, path::Path};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::{Deserialize, Serialize};

/// A value that must never reach a log: `Debug` and `Serialize` print `"<redacted>"`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

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
        }
    }
}

impl Config {
    /// Loads the layered configuration; `file` is the optional TOML file.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        // Missing keys take `Config::default()` through `#[serde(default)]`; the defaults
        // are not merged as a provider because `Secret` serialises redacted.
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("configuration file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        if std::env::var_os("HERALD_DATABASE_URL").is_none()
            && let Ok(url) = std::env::var("DATABASE_URL")
        {
            figment = figment.merge(("database_url", url));
        }
        // HERALD_CONFIG names the file itself, so it is not a key.
        figment = figment.merge(Env::prefixed("HERALD_").ignore(&["config"]));
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
        if self.tail_buffer < 16 {
            anyhow::bail!("invalid configuration: tail_buffer must be at least 16");
        }
        Ok(())
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
}
