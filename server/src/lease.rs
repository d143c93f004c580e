//! The background lease: which one of several replicas runs the work that should happen
//! once across them (the reconciler's periodic sweep and retention pruning), rather than
//! once per replica.
//!
//! With Redis it is the key `{prefix}:lease` (hash-tagged like the queue's keys), whose
//! value is the holder's replica id (`<pid>-<ulid>`, also the queue consumer's name and in
//! the replica's start-up log line), so `GET` answers "who holds it". A replica takes it
//! with `SET NX PX`, keeps it by renewing every [`RENEW_EVERY`] with a compare-and-renew
//! script (only the holder's value is extended), and gives it back at shutdown with a
//! compare-and-delete. A holder that dies (SIGKILL, lost host, partition) stops renewing:
//! the key expires at most [`TTL`] after its last renewal and another replica takes it at
//! its next attempt, so the lease moves within `TTL + RENEW_EVERY` (12 s).
//!
//! The holder counts itself as holding only until `TTL - MARGIN` after it *sent* its last
//! successful take or renewal, so it stops acting before the key can expire in Redis, also
//! when Redis is unreachable. Redis losing its data (a restart without persistence) drops
//! the key: the holder's next renewal fails and whoever comes first takes it again, with at
//! most one renewal period in which two replicas both think they hold it.
//!
//! So the lease saves work; it is not a fence, and nothing relies on it for correctness:
//! a sweep that started while held may finish after, and two overlapping holders are
//! harmless (a delivery enqueued twice claims nothing the second time, since the claim in
//! the database is the fence; pruning deletes by age).
//!
//! Why Redis rather than a PostgreSQL advisory lock: several replicas already need Redis
//! (the shared queue), the expiry bounds the takeover whatever happened to the holder (a
//! session lock lasts until PostgreSQL notices the dead connection, which after a lost host
//! is TCP keepalive's business), and it does not depend on the database connection path
//! (a lock taken through a pooler in transaction mode holds nothing).
//!
//! Without Redis there is one process per queue, so the lease is local and always held.
//! An API-only process never holds it.

use std::time::Duration;

use anyhow::anyhow;
use redis::Script;
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::redis_conn::{Conn, Patience, Target};

/// How long the key lives after a take or renewal.
pub const TTL: Duration = Duration::from_secs(10);
/// How often the holder renews, and how often the others try to take it.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// Stop counting as the holder this long before the key could expire (clock drift, the
/// time a sweep needs to notice).
const MARGIN: Duration = Duration::from_secs(1);
/// A Redis command of the keeper gives up after this, well within `TTL - MARGIN`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Extends the key's life if this replica holds it.
///
/// KEYS[1] = the lease key; ARGV[1] = this replica's id; ARGV[2] = TTL in milliseconds.
/// Returns 1 if renewed, 0 if the key is gone or someone else's.
const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the key if this replica holds it (KEYS[1], ARGV[1] as above).
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A handle on the lease, cheap to clone: ask whether this replica holds it now.
#[derive(Clone)]
pub struct BackgroundLease(Inner);

#[derive(Clone)]
enum Inner {
    /// One process, nothing to share.
    Local,
    /// A process that takes no part (API only).
    Never,
    /// `Some(until)`: held until then, unless renewed.
    Shared(watch::Receiver<Option<Instant>>),
}

impl BackgroundLease {
    /// A lease that is always held: a process whose queue no other process shares.
    pub fn local() -> BackgroundLease {
        BackgroundLease(Inner::Local)
    }

    /// A lease that is never held: a process that runs no background work.
    pub fn never() -> BackgroundLease {
        BackgroundLease(Inner::Never)
    }

    /// Connects to Redis and starts the task that takes and keeps `{prefix}:lease` for
    /// `replica`. The task gives the lease back when `shutdown` is cancelled; await its
    /// handle so that the next holder need not wait for the key to expire.
    pub async fn redis(
        url: &str,
        prefix: &str,
        replica: &str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(BackgroundLease, JoinHandle<()>)> {
        // The URL may hold a password: never echo it.
        let target = Target::parse(url).map_err(|e| anyhow!("redis: invalid redis_url: {e}"))?;
        let conn = target
            .shared(Patience {
                connect_timeout: COMMAND_TIMEOUT,
                response_timeout: COMMAND_TIMEOUT,
                retries: 1,
                max_delay: Duration::from_millis(500),
            })
            .await
            .map_err(|e| anyhow!("redis: {e}"))?;
        let (tx, rx) = watch::channel(None);
        let keeper = Keeper {
            conn,
            key: key(prefix),
            replica: replica.to_owned(),
            held: tx,
        };
        let handle = tokio::spawn(keeper.run(shutdown));
        Ok((BackgroundLease(Inner::Shared(rx)), handle))
    }

    /// True while this replica holds the lease.
    pub fn is_held(&self) -> bool {
        match &self.0 {
            Inner::Local => true,
            Inner::Never => false,
            Inner::Shared(rx) => matches!(*rx.borrow(), Some(until) if Instant::now() < until),
        }
    }

    /// Waits until this replica holds the lease (forever if its keeper stopped).
    pub async fn acquired(&self) {
        let rx = match &self.0 {
            Inner::Local => return,
            Inner::Never => return std::future::pending().await,
            Inner::Shared(rx) => rx,
        };
        let mut rx = rx.clone();
        while !self.is_held() {
            // The keeper publishes at every attempt, so an expired value is looked at
            // again within RENEW_EVERY.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The Redis key of the lease under `prefix`.
pub fn key(prefix: &str) -> String {
    format!("{{{prefix}}}:lease")
}

struct Keeper {
    conn: Conn,
    key: String,
    replica: String,
    held: watch::Sender<Option<Instant>>,
}

impl Keeper {
    async fn run(mut self, shutdown: CancellationToken) {
        let renew = Script::new(RENEW_SCRIPT);
        let ttl_ms = u64::try_from(TTL.as_millis()).unwrap_or(u64::MAX);
        loop {
            let holding = self.held.borrow().is_some();
            let sent = Instant::now();
            let attempt = if holding {
                renew
                    .key(&self.key)
                    .arg(&self.replica)
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut self.conn)
                    .await
                    .map(|renewed| renewed == 1)
            } else {
                redis::cmd("SET")
                    .arg(&self.key)
                    .arg(&self.replica)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<Option<String>>(&mut self.conn)
                    .await
                    .map(|ok| ok.is_some())
            };
            match attempt {
                Ok(true) => {
                    if !holding {
                        tracing::info!(key = %self.key, replica = %self.replica, "took the background lease");
                    }
                    self.held.send_replace(Some(sent + TTL - MARGIN));
                }
                Ok(false) => {
                    if holding {
                        tracing::warn!(key = %self.key, "lost the background lease (its key expired or Redis lost it)");
                    }
                    self.held.send_replace(None);
                }
                Err(err) => {
                    // Keep the validity we had: `is_held` lets it run out by itself.
                    tracing::warn!(error = %err, "background lease: Redis unavailable");
                    let until = *self.held.borrow();
                    self.held
                        .send_replace(until.filter(|t| Instant::now() < *t));
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(RENEW_EVERY) => {}
            }
        }
        if self.held.send_replace(None).is_some() {
            let released = Script::new(RELEASE_SCRIPT)
                .key(&self.key)
                .arg(&self.replica)
                .invoke_async::<i64>(&mut self.conn)
                .await;
            match released {
                Ok(_) => tracing::info!(key = %self.key, "gave the background lease back"),
                Err(err) => {
                    tracing::warn!(error = %err, "could not give the background lease back; it expires by itself")
                }
            }
        }
    }
}
