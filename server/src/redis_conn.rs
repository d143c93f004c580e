//! Connections to Redis, one server or a Redis Cluster, behind one type, so that the queue,
//! the background lease and the relay keep one code path each.
//!
//! `redis_url` names one server (`redis://host:port/db`) or a cluster by its seed nodes:
//! a comma-separated list of URLs (`redis://a:6379,redis://b:6379`, redis-rs's
//! `ClusterClient::new(vec![...])` as configuration), or one URL whose scheme is
//! `redis+cluster://` (`rediss+cluster://`) when a single seed is given. Seeds only serve to
//! discover the cluster; list several, so that Herald starts and re-subscribes while one is
//! down.
//!
//! Why the cluster needs nothing else: every key of a deployment carries the hash tag
//! `{prefix}`, so all of them live in one slot, and so do the keys of every script and
//! MULTI; redis-rs routes each command by its key and follows MOVED/ASK after a failover or
//! a resharding. A cluster therefore gives Herald failover of its shard, not more
//! throughput: one prefix is one shard.
//!
//! Pub/sub (the relay): a classic PUBLISH is broadcast over the cluster bus to every node,
//! so a SUBSCRIBE on any node hears every replica. redis-rs 0.32 has cluster pub/sub only
//! over RESP3 with a push sender, re-subscribing after its own recoveries; a plain
//! subscription to one node, the next seed after each failure ([`Target::nodes`]), keeps the
//! relay's one loop (pinged, reconnected with backoff, a storage read after every
//! subscription) for both forms and any Redis version.

use std::time::Duration;

use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture,
    RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};

/// Where Herald's Redis is: parsed from `redis_url`.
#[derive(Clone)]
pub struct Target(Kind);

#[derive(Clone)]
enum Kind {
    Single(Client),
    /// The seed nodes, checked to agree (credentials, TLS, protocol).
    Cluster(Vec<ConnectionInfo>),
}

/// How a shared connection waits and retries before a command fails as unavailable.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Retries of a command on a connection error (reconnecting in between).
    pub retries: u32,
    /// Longest pause between those retries.
    pub max_delay: Duration,
}

impl Target {
    /// Parses `redis_url`. The message of an error never quotes the URL (it may hold a
    /// password); callers prefix it with the key's name.
    pub fn parse(url: &str) -> Result<Target, String> {
        let parts: Vec<&str> = url.split(',').map(str::trim).collect();
        let mut cluster = parts.len() > 1;
        let mut seeds = Vec::with_capacity(parts.len());
        for (n, part) in parts.iter().enumerate() {
            let which = if parts.len() > 1 {
                format!("seed {} of {}", n + 1, parts.len())
            } else {
                "the URL".to_string()
            };
            let (plain, marked) = if let Some(rest) = part.strip_prefix("redis+cluster://") {
                (format!("redis://{rest}"), true)
            } else if let Some(rest) = part.strip_prefix("rediss+cluster://") {
                (format!("rediss://{rest}"), true)
            } else {
                ((*part).to_string(), false)
            };
            cluster |= marked;
            if !(plain.starts_with("redis://") || plain.starts_with("rediss://")) {
                return Err(format!(
                    "{which} must start with redis://, rediss://, redis+cluster:// or \
                     rediss+cluster:// (a cluster: comma-separated seed URLs)"
                ));
            }
            // redis-rs's messages name what is wrong, never the URL itself.
            let info = plain
                .as_str()
                .into_connection_info()
                .map_err(|e| format!("{which} is not a valid Redis URL: {e}"))?;
            seeds.push(info);
        }
        if !cluster && let Some(info) = seeds.pop() {
            let client = Client::open(info).map_err(|e| format!("not usable: {e}"))?;
            return Ok(Target(Kind::Single(client)));
        }
        if seeds.iter().any(|s| s.redis.db != 0) {
            return Err("a Redis Cluster has only database 0: drop the /<db> path".into());
        }
        // Checks that the seeds agree on credentials, TLS and protocol.
        ClusterClient::new(seeds.clone()).map_err(|e| format!("cluster seeds: {e}"))?;
        Ok(Target(Kind::Cluster(seeds)))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Kind::Cluster(_))
    }

    /// The connection for every non-blocking command: multiplexed, cheap to clone,
    /// reconnecting by itself (to a cluster's nodes, following its topology).
    pub async fn shared(&self, patience: Patience) -> RedisResult<Conn> {
        let delay_ms = u64::try_from(patience.max_delay.as_millis()).unwrap_or(u64::MAX);
        match &self.0 {
            Kind::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(patience.connect_timeout)
                    .set_response_timeout(patience.response_timeout)
                    .set_number_of_retries(patience.retries as usize)
                    .set_max_delay(delay_ms);
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(Conn::Managed)
            }
            Kind::Cluster(seeds) => {
                // redis-rs's defaults (16 retries, up to 655 s apart) would hide an outage
                // from health and stall the callers, which retry with their own backoff.
                cluster_builder(seeds, patience.connect_timeout)
                    .response_timeout(patience.response_timeout)
                    .retries(patience.retries)
                    .min_retry_wait(delay_ms.min(100))
                    .max_retry_wait(delay_ms)
                    .build()?
                    .get_async_connection()
                    .await
                    .map(Conn::Cluster)
            }
        }
    }

    /// A connection of its own, for a blocking command (which would stall every other
    /// command sent on its connection meanwhile), without a response timeout: the caller
    /// bounds the wait. Dropping it closes it, which ends the command on the server.
    pub async fn dedicated(&self, connect_timeout: Duration) -> RedisResult<Conn> {
        match &self.0 {
            Kind::Single(client) => {
                let config = AsyncConnectionConfig::new().set_connection_timeout(connect_timeout);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Plain)
            }
            Kind::Cluster(seeds) => cluster_builder(seeds, connect_timeout)
                .retries(1)
                .min_retry_wait(50)
                .max_retry_wait(500)
                .build()?
                .get_async_connection()
                .await
                .map(Conn::Cluster),
        }
    }

    /// The nodes a subscription may use, in the order to try them: the one server, or
    /// the cluster's seeds (a PUBLISH reaches every node of a cluster).
    pub fn nodes(&self) -> Vec<Client> {
        match &self.0 {
            Kind::Single(client) => vec![client.clone()],
            Kind::Cluster(seeds) => seeds
                .iter()
                .filter_map(|seed| Client::open(seed.clone()).ok())
                .collect(),
        }
    }
}

fn cluster_builder(seeds: &[ConnectionInfo], connect_timeout: Duration) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.to_vec()).connection_timeout(connect_timeout)
}

/// A connection to one server or to a cluster; commands, pipelines and scripts run on
/// either through [`ConnectionLike`].
#[derive(Clone)]
pub enum Conn {
    Managed(ConnectionManager),
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Plain(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        Target::parse(url).err().expect("refused")
    }

    #[test]
    fn one_server_or_a_cluster() {
        assert!(
            !Target::parse("redis://127.0.0.1:6379")
                .unwrap()
                .is_cluster()
        );
        assert!(
            !Target::parse("redis://:pw@127.0.0.1:6379/3")
                .unwrap()
                .is_cluster()
        );
        assert!(
            Target::parse("redis://10.0.0.1:7000, redis://10.0.0.2:7000")
                .unwrap()
                .is_cluster()
        );
        let one_seed = Target::parse("redis+cluster://:pw@10.0.0.1:7000").unwrap();
        assert!(one_seed.is_cluster());
        assert_eq!(one_seed.nodes().len(), 1);
        let seeds = Target::parse("redis+cluster://a:7000,redis://b:7000,redis://c:7000").unwrap();
        assert!(seeds.is_cluster());
        assert_eq!(seeds.nodes().len(), 3);
    }

    #[test]
    fn errors_say_what_and_never_quote_the_url() {
        let e = err("http://secret-pw@host:6379");
        assert!(e.contains("must start with redis://"), "{e}");
        let e = err("redis://a:7000,");
        assert!(e.contains("seed 2 of 2"), "{e}");
        let e = err("redis://:secret-pw@a:7000/2,redis://:secret-pw@b:7000/2");
        assert!(e.contains("database 0"), "{e}");
        let e = err("redis://:secret-pw@a:7000,redis://:other-pw@b:7000");
        assert!(e.contains("password"), "{e}");
        for url in [
            "http://secret-pw@host:6379",
            "redis://:secret-pw@a:7000/2,redis://:secret-pw@b:7000/2",
            "redis://:secret-pw@a:7000,redis://:other-pw@b:7000",
            "redis://:secret-pw@a:notaport",
        ] {
            let e = err(url);
            assert!(!e.contains("secret-pw"), "{e}");
        }
    }
}
