//! Redis queue: ready work in a Stream read through a consumer group, retries in a sorted
//! set moved to the stream by a Lua script when due.
//!
//! Keys (all in one hash slot thanks to the `{prefix}` hash tag, so the Lua script and
//! MULTI work on Redis Cluster, and several queues can share one Redis by prefix):
//!
//! - `{prefix}:ready`: Stream of ready entries, fields `d` (delivery id) and `e` (endpoint
//!   id), read by the consumer group [`GROUP`]. An entry is handed out by `XREADGROUP`
//!   (or reclaimed by `XAUTOCLAIM` after the lease) and removed by `XACK` + `XDEL`, so the
//!   stream holds only ready and leased entries and needs no MAXLEN.
//! - `{prefix}:scheduled`: sorted set of retries, member `<delivery id>|<endpoint id>`,
//!   score the due time in Unix milliseconds (a retry of the same delivery replaces the
//!   earlier one).
//!   The set is bounded (`with_max_scheduled`): beyond the bound only the retries due
//!   first stay, and the rest live in the database alone until there is room (see
//!   *Bounded schedule* below).
//! - `{prefix}:spilled`: while the database holds pending deliveries that the sorted set
//!   left out, the due time (Unix milliseconds) from which they were left out.
//! - `{prefix}:epoch`: a random token set when the keys are first created. Its absence or a
//!   change tells a running Herald that Redis lost its data (restart without persistence,
//!   FLUSHALL).
//!
//! ## Bounded schedule
//!
//! A sorted-set member costs Redis about 180 bytes, so a million retries waiting for a
//! receiver that is down would take ~180 MB. The schedule script therefore keeps at most
//! `max_scheduled` members (the earliest due), drops the latest-due beyond it and records
//! in `spilled` the earliest due time it dropped. Nothing is lost: every retry's due time
//! is committed in the database before it is scheduled (a delivery put back because its
//! endpoint was busy is pending there, due already). The reconciler asks
//! [`Queue::refill_room`] a few times a second; once the set is under half full and few
//! ready entries wait, it reads the earliest pending deliveries from the database and
//! schedules them again (members already in the set are only rewritten, entries that are
//! mid-claim turn into nothing at the claim).
//!
//! While something is left out, the set takes nothing due after it: a member due later is
//! dropped as it is added (its delivery waits in the database like the others). Without
//! this, a spill of deliveries due soon followed by many retries due hours later (a
//! receiver that is down) would leave the set full of the later ones once the earlier
//! members were promoted: it would never be under half full, and what was left out, due
//! long ago, would wait for hours. With it, the set holds only members due before
//! anything left out, so it drains as they come due and the refill follows. The ready
//! stream is compact (~60 bytes an entry), so pushes are not bounded.
//!
//! Per-endpoint FIFO can be added later with more keys under the same tag (e.g. a list per
//! endpoint, `{prefix}:fifo:<endpoint id>`, whose head alone sits in the stream), without
//! changing the entry format or the trait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::anyhow;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamReadReply};
use redis::{RedisError, RetryMethod, Script};
use tokio::time::Instant;

use super::{Depth, Lease, Queue, QueueItem};
use crate::error::{Error, Result};
use crate::redis_conn::{Conn, Patience, Target};

/// The consumer group every Herald reads through (consumers are the processes).
pub const GROUP: &str = "herald";

/// Scheduled items one run of the promote script moves at most.
const PROMOTE_BATCH: u64 = 1000;
/// Runs of the promote script per `promote_due` call at most (the rest waits for the
/// next call).
const PROMOTE_MAX_BATCHES: u32 = 100;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a non-blocking command may take before it fails as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle dedicated connections kept for blocking reads.
const MAX_IDLE_BLOCKING: usize = 4;

/// Moves due retries to the ready stream, atomically.
///
/// KEYS[1] = scheduled sorted set, KEYS[2] = ready stream;
/// ARGV[1] = now (Unix ms): members with score <= now are due; ARGV[2] = batch size.
/// Takes the first ARGV[2] due members by score, XADDs each as `d`/`e` (split at the first
/// `|`) and ZREMs them. Returns how many moved; a full batch means more may be due.
const PROMOTE_SCRIPT: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  local d, e = member, ''
  if sep then
    d = string.sub(member, 1, sep - 1)
    e = string.sub(member, sep + 1)
  end
  redis.call('XADD', KEYS[2], '*', 'd', d, 'e', e)
end
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
return #due
";

/// Moves the given members of the sorted set that are still in it to the stream, due or
/// not (see `Queue::hasten`).
///
/// KEYS[1] = scheduled sorted set, KEYS[2] = ready stream; ARGV = members.
/// Returns how many moved.
const HASTEN_SCRIPT: &str = r"
local moved = 0
for _, member in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local sep = string.find(member, '|', 1, true)
    redis.call('XADD', KEYS[2], '*', 'd', string.sub(member, 1, sep - 1), 'e', string.sub(member, sep + 1))
    moved = moved + 1
  end
end
return moved
";

/// Adds retries to the sorted set, keeping at most a bound of them (the earliest due) and
/// none due after what is left out.
///
/// KEYS[1] = scheduled sorted set, KEYS[2] = spilled (the earliest due time left out);
/// ARGV[1] = the bound (0: none), ARGV[2..] = score, member pairs.
/// Returns how many members were dropped (their deliveries wait in the database).
const SCHEDULE_SCRIPT: &str = r"
redis.call('ZADD', KEYS[1], unpack(ARGV, 2))
local dropped = 0
local from = redis.call('GET', KEYS[2])
if from then
  dropped = redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. from, '+inf')
end
local max = tonumber(ARGV[1])
if max > 0 then
  local n = redis.call('ZCARD', KEYS[1])
  if n > max then
    local first = redis.call('ZRANGE', KEYS[1], max, max, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', KEYS[1], max, -1)
    if not from or tonumber(first[2]) < tonumber(from) then
      redis.call('SET', KEYS[2], first[2])
    end
    dropped = dropped + n - max
  end
end
return dropped
";

/// Records that deliveries due from a time on are left out, and drops the members due
/// after it (their deliveries are in the database too).
///
/// KEYS[1] = scheduled sorted set, KEYS[2] = spilled; ARGV[1] = the time (Unix ms).
/// Keeps the earlier time if one is recorded. Returns how many members were dropped.
const MARK_SPILLED_SCRIPT: &str = r"
local from = ARGV[1]
local old = redis.call('GET', KEYS[2])
if old and tonumber(old) < tonumber(from) then from = old end
redis.call('SET', KEYS[2], from)
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. from, '+inf')
";

/// Whether the reconciler should bring spilled retries back now.
///
/// KEYS[1] = scheduled sorted set, KEYS[2] = ready stream, KEYS[3] = spilled flag;
/// ARGV[1] = the bound, ARGV[2] = the consumer group, ARGV[3] = most ready entries not
/// yet handed out for a refill to go ahead (they would be read again from the database).
/// Returns -1 when nothing spilled, 0 when it is too early, else the bound (the flag is
/// cleared: the caller sets it again if the database still holds more).
const REFILL_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local max = tonumber(ARGV[1])
if redis.call('ZCARD', KEYS[1]) * 2 >= max then return 0 end
local ready = redis.call('XLEN', KEYS[2])
if ready > 0 then
  local ok, pending = pcall(redis.call, 'XPENDING', KEYS[2], ARGV[2])
  if ok then ready = ready - pending[1] end
end
if ready > tonumber(ARGV[3]) then return 0 end
redis.call('DEL', KEYS[3])
return max
";

/// Schedule members per script call (two arguments each, under Lua's stack limit).
const SCHEDULE_CHUNK: usize = 1000;
/// The default bound of the sorted set: ~18 MB of Redis.
pub const DEFAULT_MAX_SCHEDULED: u64 = 100_000;
/// Ready entries not handed out above which a refill waits: those rows are still
/// pending in the database and would be queued twice.
const REFILL_MAX_READY: u64 = 2_000;

struct Keys {
    ready: String,
    scheduled: String,
    spilled: String,
    epoch: String,
}

struct Reclaim {
    /// Where the next XAUTOCLAIM scan starts (`0-0`: from the beginning).
    cursor: String,
    /// When the last scan that reached the end of the pending list finished.
    last_full_scan: Option<Instant>,
}

pub struct RedisQueue {
    target: Target,
    /// Shared, auto-reconnecting, multiplexed: every non-blocking command and pipeline.
    conn: Conn,
    /// Idle dedicated connections for `XREADGROUP ... BLOCK`.
    ///
    /// A blocking read holds its connection on the server side until it returns, so on the
    /// shared multiplexed connection it would stall every other command (acks, pushes,
    /// the promote script) for up to `wait`. Polling with non-blocking reads and a sleep
    /// would instead add up to the sleep to the latency of every delivery, or cost a round
    /// trip per few milliseconds per idle worker. So a blocking read takes a connection of
    /// its own out of this pool (opening one when it is empty) and puts it back only when
    /// the read succeeded: a connection that failed, timed out, or whose `pop` was dropped
    /// mid-read is dropped (closing it also ends the read on the server), and the next
    /// read opens a fresh one. Concurrent pops each get their own connection.
    /// On a cluster each is a cluster connection of its own (routed, following MOVED).
    blocking: Mutex<Vec<Conn>>,
    keys: Keys,
    consumer: String,
    lease: Duration,
    promote: Script,
    hasten: Script,
    schedule: Script,
    refill: Script,
    mark_spilled: Script,
    /// The bound of the scheduled set (0: none).
    max_scheduled: u64,
    /// The epoch token this process last saw.
    epoch: Mutex<String>,
    /// Set when the queue noticed a loss (created the epoch, lost its group); cleared by
    /// `lost_data`.
    lost: AtomicBool,
    reclaim: Mutex<Reclaim>,
}

/// Maps a Redis error: connection problems are `Unavailable` (the caller retries with
/// backoff), anything else is internal.
fn redis_error(e: RedisError) -> Error {
    let connection = e.is_io_error()
        || matches!(
            e.retry_method(),
            RetryMethod::Reconnect
                | RetryMethod::ReconnectFromInitialConnections
                | RetryMethod::WaitAndRetry
        );
    crate::metrics::redis_error(connection);
    if connection {
        Error::Unavailable(format!("redis: {e}"))
    } else {
        Error::Internal(anyhow!("redis: {e}"))
    }
}

/// True if the consumer group is gone: `NOGROUP` (no stream or no group), or a blocked
/// read ended because its stream was deleted (`UNBLOCKED`).
fn is_group_lost(e: &RedisError) -> bool {
    matches!(e.code(), Some("NOGROUP" | "UNBLOCKED"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned one still holds valid data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates the group at the start of the stream (creating the stream too), so that
/// entries added before the group existed, e.g. pushed after a Redis restart, are read.
async fn create_group(conn: &mut Conn, ready: &str) -> Result<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(ready)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(redis_error(e)),
        _ => Ok(()),
    }
}

/// Sets the epoch to `token` unless it exists, and returns the epoch now in Redis, and
/// whether this call created it.
async fn ensure_epoch(conn: &mut Conn, key: &str, token: &str) -> Result<(String, bool)> {
    let (created, current): (bool, Option<String>) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(key)
        .arg(token)
        .arg("NX")
        .cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(redis_error)?;
    Ok((current.unwrap_or_else(|| token.to_owned()), created))
}

fn entry_item(entry: &StreamId) -> Option<QueueItem> {
    Some(QueueItem {
        delivery_id: entry.get("d")?,
        endpoint_id: entry.get("e").unwrap_or_default(),
    })
}

fn block_ms(wait: Duration) -> usize {
    // Rounded up: BLOCK 0 would mean forever.
    usize::try_from(wait.as_micros().div_ceil(1000))
        .unwrap_or(usize::MAX)
        .max(1)
}

impl RedisQueue {
    /// Connects, creates the consumer group and the epoch if missing.
    ///
    /// `consumer` names this process in the group (unique per replica); `lease` is how
    /// long an unacked entry stays with its consumer before another may reclaim it (longer
    /// than the webhook request timeout).
    pub async fn connect(
        url: &str,
        prefix: &str,
        consumer: &str,
        lease: Duration,
    ) -> Result<RedisQueue> {
        // The URL may hold a password: never echo it.
        let target = Target::parse(url)
            .map_err(|e| Error::Internal(anyhow!("redis: invalid redis_url: {e}")))?;
        let mut conn = target
            .shared(Patience {
                connect_timeout: CONNECT_TIMEOUT,
                response_timeout: RESPONSE_TIMEOUT,
                retries: 2,
                max_delay: Duration::from_secs(1),
            })
            .await
            .map_err(redis_error)?;
        let keys = Keys {
            ready: format!("{{{prefix}}}:ready"),
            scheduled: format!("{{{prefix}}}:scheduled"),
            spilled: format!("{{{prefix}}}:spilled"),
            epoch: format!("{{{prefix}}}:epoch"),
        };
        // An epoch created now means Redis holds nothing of ours: either a first start or
        // Redis lost its data while Herald was down. Report it (a reconcile of an empty
        // database costs nothing).
        let (epoch, created) =
            ensure_epoch(&mut conn, &keys.epoch, &ulid::Ulid::new().to_string()).await?;
        create_group(&mut conn, &keys.ready).await?;
        Ok(RedisQueue {
            target,
            conn,
            blocking: Mutex::new(Vec::new()),
            keys,
            consumer: consumer.to_owned(),
            lease,
            promote: Script::new(PROMOTE_SCRIPT),
            hasten: Script::new(HASTEN_SCRIPT),
            schedule: Script::new(SCHEDULE_SCRIPT),
            refill: Script::new(REFILL_SCRIPT),
            mark_spilled: Script::new(MARK_SPILLED_SCRIPT),
            max_scheduled: DEFAULT_MAX_SCHEDULED,
            epoch: Mutex::new(epoch),
            lost: AtomicBool::new(created),
            reclaim: Mutex::new(Reclaim {
                cursor: "0-0".into(),
                last_full_scan: None,
            }),
        })
    }

    /// Bounds the scheduled set to `max` members (0: unbounded); see *Bounded schedule*.
    pub fn with_max_scheduled(mut self, max: u64) -> Self {
        self.max_scheduled = max;
        self
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// Recreates a lost consumer group and remembers the loss for `lost_data`.
    async fn recover_group(&self) -> Result<()> {
        tracing::warn!(
            stream = %self.keys.ready,
            "redis queue lost its consumer group (Redis restart or data loss?); recreating it"
        );
        self.lost.store(true, Ordering::SeqCst);
        create_group(&mut self.conn.clone(), &self.keys.ready).await
    }

    /// Turns read entries into leases; entries without a delivery id (not written by
    /// Herald) are acked and deleted so that they don't come back.
    async fn leases(&self, entries: Vec<StreamId>) -> Result<Vec<Lease>> {
        let mut out = Vec::with_capacity(entries.len());
        let mut junk = Vec::new();
        for entry in entries {
            match entry_item(&entry) {
                Some(item) => out.push(Lease {
                    item,
                    token: entry.id,
                }),
                None => junk.push(entry.id),
            }
        }
        if !junk.is_empty() {
            tracing::warn!(count = junk.len(), stream = %self.keys.ready, "dropping malformed queue entries");
            self.ack_ids(&junk).await?;
        }
        Ok(out)
    }

    async fn ack_ids(&self, ids: &[String]) -> Result<()> {
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.keys.ready)
            .arg(GROUP)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.ready)
            .arg(ids)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    /// Claims up to `max` entries idle longer than the lease (a crashed or stuck
    /// consumer's) for this consumer. A full scan of the pending list runs at most every
    /// quarter lease; a scan cut short by `max` continues at the next call.
    async fn reclaim(&self, max: usize) -> Result<Vec<Lease>> {
        let cursor = {
            let state = lock(&self.reclaim);
            let fresh = state
                .last_full_scan
                .is_some_and(|at| at.elapsed() < self.lease / 4);
            if state.cursor == "0-0" && fresh {
                return Ok(Vec::new());
            }
            state.cursor.clone()
        };
        let reply = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.ready)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.lease_ms())
            .arg(&cursor)
            .arg("COUNT")
            .arg(max)
            .query_async(&mut self.conn.clone())
            .await;
        let reply: StreamAutoClaimReply = match reply {
            Ok(reply) => reply,
            Err(e) if is_group_lost(&e) => {
                // A new group has nothing pending: nothing to reclaim.
                self.recover_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(redis_error(e)),
        };
        {
            let mut state = lock(&self.reclaim);
            if reply.next_stream_id == "0-0" {
                state.last_full_scan = Some(Instant::now());
            }
            state.cursor = reply.next_stream_id;
        }
        if !reply.claimed.is_empty() {
            tracing::info!(
                count = reply.claimed.len(),
                consumer = %self.consumer,
                "reclaimed queue entries whose lease expired"
            );
        }
        self.leases(reply.claimed).await
    }

    /// `XREADGROUP >`: up to `max` new entries, blocking up to `wait` (not at all if zero).
    async fn read(
        &self,
        max: usize,
        wait: Duration,
    ) -> std::result::Result<Vec<StreamId>, RedisError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max);
        if wait.is_zero() {
            cmd.arg("STREAMS").arg(&self.keys.ready).arg(">");
            let reply: Option<StreamReadReply> = cmd.query_async(&mut self.conn.clone()).await?;
            return Ok(flatten(reply));
        }
        cmd.arg("BLOCK")
            .arg(block_ms(wait))
            .arg("STREAMS")
            .arg(&self.keys.ready)
            .arg(">");
        let pooled = lock(&self.blocking).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.target.dedicated(CONNECT_TIMEOUT).await?,
        };
        // The client-side limit is the block time plus the usual response time, so a
        // half-open connection fails instead of hanging the worker.
        let reply = tokio::time::timeout(wait + RESPONSE_TIMEOUT, cmd.query_async(&mut conn))
            .await
            .map_err(|_| {
                RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "blocking read timed out",
                ))
            })??;
        // Only a connection that just answered goes back to the pool.
        let mut pool = lock(&self.blocking);
        if pool.len() < MAX_IDLE_BLOCKING {
            pool.push(conn);
        }
        drop(pool);
        Ok(flatten(reply))
    }
}

fn flatten(reply: Option<StreamReadReply>) -> Vec<StreamId> {
    reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Queue for RedisQueue {
    async fn push(&self, items: &[QueueItem]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for item in items {
            pipe.cmd("XADD")
                .arg(&self.keys.ready)
                .arg("*")
                .arg("d")
                .arg(&item.delivery_id)
                .arg("e")
                .arg(&item.endpoint_id)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    async fn schedule(&self, items: &[(QueueItem, i64)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        if let Some((item, _)) = items.iter().find(|(i, _)| i.delivery_id.contains('|')) {
            return Err(Error::Internal(anyhow!(
                "redis queue: delivery id {:?} contains '|'",
                item.delivery_id
            )));
        }
        let mut conn = self.conn.clone();
        for chunk in items.chunks(SCHEDULE_CHUNK) {
            let mut invocation = self.schedule.prepare_invoke();
            invocation
                .key(&self.keys.scheduled)
                .key(&self.keys.spilled)
                .arg(self.max_scheduled);
            for (item, at_micros) in chunk {
                // Milliseconds, rounded down: promote_due(now) moves everything due at or
                // before now (at most a millisecond early), never later.
                invocation
                    .arg(at_micros.div_euclid(1000))
                    .arg(format!("{}|{}", item.delivery_id, item.endpoint_id));
            }
            let dropped: u64 = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            if dropped > 0 {
                tracing::debug!(
                    dropped,
                    max = self.max_scheduled,
                    "scheduled retries spilled to the database"
                );
            }
        }
        Ok(())
    }

    async fn hasten(&self, items: &[QueueItem]) -> Result<u64> {
        let mut conn = self.conn.clone();
        let mut moved = 0;
        for chunk in items.chunks(SCHEDULE_CHUNK) {
            let mut invocation = self.hasten.prepare_invoke();
            invocation.key(&self.keys.scheduled).key(&self.keys.ready);
            for item in chunk {
                invocation.arg(format!("{}|{}", item.delivery_id, item.endpoint_id));
            }
            moved += invocation
                .invoke_async::<u64>(&mut conn)
                .await
                .map_err(redis_error)?;
        }
        Ok(moved)
    }

    async fn refill_room(&self) -> Result<Option<u64>> {
        if self.max_scheduled == 0 {
            return Ok(None);
        }
        let room: i64 = self
            .refill
            .key(&self.keys.scheduled)
            .key(&self.keys.ready)
            .key(&self.keys.spilled)
            .arg(self.max_scheduled)
            .arg(GROUP)
            .arg(REFILL_MAX_READY)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(u64::try_from(room).ok())
    }

    async fn mark_spilled(&self, from_micros: i64) -> Result<()> {
        let dropped: u64 = self
            .mark_spilled
            .key(&self.keys.scheduled)
            .key(&self.keys.spilled)
            .arg(from_micros.div_euclid(1000))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        if dropped > 0 {
            tracing::debug!(
                dropped,
                "scheduled retries due after those left out dropped"
            );
        }
        Ok(())
    }

    async fn promote_due(&self, now_micros: i64) -> Result<u64> {
        let now_ms = now_micros.div_euclid(1000);
        let mut conn = self.conn.clone();
        let mut total = 0;
        for _ in 0..PROMOTE_MAX_BATCHES {
            let moved: u64 = self
                .promote
                .key(&self.keys.scheduled)
                .key(&self.keys.ready)
                .arg(now_ms)
                .arg(PROMOTE_BATCH)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            total += moved;
            if moved < PROMOTE_BATCH {
                break;
            }
        }
        Ok(total)
    }

    async fn pop(&self, max: usize, wait: Duration) -> Result<Vec<Lease>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        let mut out = self.reclaim(max).await?;
        if out.len() >= max {
            return Ok(out);
        }
        // With reclaimed entries in hand, only take what is there without waiting.
        let block = |out: &Vec<Lease>| {
            if out.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            }
        };
        let read = match self.read(max - out.len(), block(&out)).await {
            Err(e) if is_group_lost(&e) => {
                self.recover_group().await?;
                self.read(max - out.len(), block(&out)).await
            }
            read => read,
        };
        match read {
            Ok(entries) => out.extend(self.leases(entries).await?),
            // Hand out what was reclaimed; the next pop reports the error.
            Err(e) if !out.is_empty() => {
                tracing::warn!(error = %e, "redis queue read failed after a reclaim");
            }
            Err(e) => return Err(redis_error(e)),
        }
        Ok(out)
    }

    async fn ack(&self, leases: &[Lease]) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = leases.iter().map(|l| l.token.clone()).collect();
        self.ack_ids(&ids).await
    }

    async fn lost_data(&self) -> Result<bool> {
        let mut conn = self.conn.clone();
        let current: Option<String> = redis::cmd("GET")
            .arg(&self.keys.epoch)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let current = match current {
            Some(current) => current,
            // Gone: Redis lost our keys. Set a new epoch (or read the one another replica
            // set first).
            None => {
                let token = ulid::Ulid::new().to_string();
                ensure_epoch(&mut conn, &self.keys.epoch, &token).await?.0
            }
        };
        let changed = {
            let mut seen = lock(&self.epoch);
            let changed = *seen != current;
            if changed {
                *seen = current;
            }
            changed
        };
        if changed {
            tracing::warn!(key = %self.keys.epoch, "redis queue epoch changed: Redis lost its data");
        }
        Ok(self.lost.swap(false, Ordering::SeqCst) || changed)
    }

    async fn depth(&self) -> Result<Depth> {
        let mut conn = self.conn.clone();
        let (len, scheduled): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(&self.keys.ready)
            .cmd("ZCARD")
            .arg(&self.keys.scheduled)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        // Acked entries are deleted: the stream holds exactly the ready and leased ones.
        let mut depth = Depth {
            ready: 0,
            scheduled,
            leased: 0,
        };
        if len == 0 {
            return Ok(depth);
        }
        let info: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.keys.ready)
            .query_async(&mut conn)
            .await;
        let info = match info {
            Ok(info) => info,
            // Deleted since XLEN.
            Err(e) if e.to_string().contains("no such key") => return Ok(depth),
            Err(e) => return Err(redis_error(e)),
        };
        match info.groups.iter().find(|g| g.name == GROUP) {
            // No group (yet): everything is ready.
            None => depth.ready = len,
            Some(group) => {
                depth.leased = group.pending as u64;
                // `lag` (Redis 7) counts the entries not yet delivered to the group; when
                // Redis can't tell, the stream minus the pending entries is the same.
                let unread = len.saturating_sub(depth.leased);
                depth.ready = group.lag.map_or(unread, |lag| (lag as u64).min(len));
            }
        }
        Ok(depth)
    }

    async fn oldest_due(&self, now_micros: i64) -> Result<Option<i64>> {
        let mut conn = self.conn.clone();
        let (len, first_scheduled): (u64, Vec<(String, f64)>) = redis::pipe()
            .cmd("XLEN")
            .arg(&self.keys.ready)
            .cmd("ZRANGE")
            .arg(&self.keys.scheduled)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let overdue = first_scheduled
            .first()
            .map(|(_, ms)| (*ms as i64).saturating_mul(1000))
            .filter(|at| *at <= now_micros);
        if len == 0 {
            return Ok(overdue);
        }
        let info: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.keys.ready)
            .query_async(&mut conn)
            .await;
        // The entries after the group's last delivered id were never handed out: the
        // first of them is the oldest ready one, and its id is the time it was added.
        let start = match info {
            Ok(info) => match info.groups.iter().find(|g| g.name == GROUP) {
                Some(group) => format!("({}", group.last_delivered_id),
                None => "-".to_string(),
            },
            // Deleted since XLEN.
            Err(e) if e.to_string().contains("no such key") => return Ok(overdue),
            Err(e) => return Err(redis_error(e)),
        };
        let first: Vec<StreamId> = redis::cmd("XRANGE")
            .arg(&self.keys.ready)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async::<redis::streams::StreamRangeReply>(&mut conn)
            .await
            .map_err(redis_error)?
            .ids;
        let ready = first
            .first()
            .and_then(|entry| entry.id.split_once('-'))
            .and_then(|(ms, _)| ms.parse::<i64>().ok())
            .map(|ms| ms * 1000);
        Ok(ready.into_iter().chain(overdue).min())
    }
}

#[cfg(test)]
mod tests {
    //! Against the real Redis at `redis://127.0.0.1:6379` (or `HERALDTEST_REDIS_URL`),
    //! shared with other tests: each test uses its own prefix and deletes its own keys,
    //! never FLUSHALL.

    use std::collections::HashSet;
    use std::sync::Arc;

    use redis::{Client, aio::MultiplexedConnection};

    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    fn url() -> String {
        std::env::var("HERALDTEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    fn prefix() -> String {
        format!("herald-test-{}", ulid::Ulid::new())
    }

    async fn queue(prefix: &str, consumer: &str, lease: Duration) -> RedisQueue {
        let url = url();
        RedisQueue::connect(&url, prefix, consumer, lease)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the Redis queue tests need a Redis at {url} (set HERALDTEST_REDIS_URL, or \
                     start one: `docker compose up -d redis`): {e}"
                )
            })
    }

    /// A fresh queue with its first `lost_data` (the epoch it just created) consumed.
    async fn fresh(prefix: &str, consumer: &str, lease: Duration) -> RedisQueue {
        let q = queue(prefix, consumer, lease).await;
        assert!(
            q.lost_data().await.unwrap(),
            "a new epoch reads as lost data once"
        );
        assert!(!q.lost_data().await.unwrap());
        q
    }

    async fn raw() -> MultiplexedConnection {
        Client::open(url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis for the queue tests")
    }

    async fn cmd_u64(args: &[&str]) -> u64 {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query_async(&mut raw().await).await.unwrap()
    }

    async fn cleanup(prefix: &str) {
        let keys = ["ready", "scheduled", "spilled", "epoch"].map(|k| format!("{{{prefix}}}:{k}"));
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut raw().await)
            .await;
    }

    fn item(n: usize) -> QueueItem {
        QueueItem {
            delivery_id: format!("dlv_{n:05}"),
            endpoint_id: format!("ep_{}", n % 7),
        }
    }

    /// The schedule's members, earliest due first.
    async fn members(q: &RedisQueue) -> Vec<String> {
        redis::cmd("ZRANGE")
            .arg(&q.keys.scheduled)
            .arg(0)
            .arg(-1)
            .query_async(&mut raw().await)
            .await
            .unwrap()
    }

    /// The due time (Unix ms) from which deliveries are left out of the schedule.
    async fn spilled_from(q: &RedisQueue) -> String {
        redis::cmd("GET")
            .arg(&q.keys.spilled)
            .query_async(&mut raw().await)
            .await
            .unwrap()
    }

    /// Once deliveries are left out, nothing due after them is kept: a set refilled with
    /// later retries after the earlier members were promoted would never be under half
    /// full, and what was left out would wait for those later retries to come due.
    #[tokio::test]
    async fn nothing_due_after_what_is_left_out_is_kept() {
        let p = prefix();
        let q = fresh(&p, "c1", LONG).await.with_max_scheduled(10);
        let now = now_micros();
        let soon = |n: usize| (item(n), now + 1_000_000 + n as i64 * 1000);
        // 15 due within two seconds: 5 left out, from the 11th's due time.
        q.schedule(&(0..15).map(soon).collect::<Vec<_>>())
            .await
            .unwrap();
        let spilled = spilled_from(&q).await;
        assert_eq!(spilled, ((now + 1_010_000) / 1000).to_string());
        // The 10 kept come due and are promoted; retries due in an hour arrive.
        assert_eq!(q.promote_due(now + 2_000_000).await.unwrap(), 10);
        let hour = |n: usize| (item(n), now + 3_600_000_000);
        q.schedule(&(100..110).map(hour).collect::<Vec<_>>())
            .await
            .unwrap();
        // Only one due before what is left out is kept beside them.
        q.schedule(&[soon(5), (item(21), now + 1_020_000)])
            .await
            .unwrap();
        let kept = members(&q).await;
        assert_eq!(
            kept,
            [format!("{}|{}", item(5).delivery_id, item(5).endpoint_id)]
        );
        // So the set is under half full: the refill goes ahead.
        assert_eq!(q.refill_room().await.unwrap(), Some(10));

        // Marked again from a time: later members leave, the earliest mark stays.
        q.schedule(&(100..105).map(hour).collect::<Vec<_>>())
            .await
            .unwrap();
        q.mark_spilled(now + 3_600_000_000).await.unwrap();
        assert_eq!(q.depth().await.unwrap().scheduled, 6);
        q.mark_spilled(now + 5_000_000).await.unwrap();
        assert_eq!(q.depth().await.unwrap().scheduled, 1);
        q.mark_spilled(now + 60_000_000).await.unwrap();
        let spilled = spilled_from(&q).await;
        assert_eq!(spilled, ((now + 5_000_000) / 1000).to_string());
        cleanup(&p).await;
    }

    /// The bound keeps the earliest-due retries; the refill waits until the set is under
    /// half full and few ready entries wait, and clears the spill when it goes ahead.
    #[tokio::test]
    async fn bounded_schedule_keeps_the_earliest_and_reports_the_spill() {
        let p = prefix();
        let q = fresh(&p, "c1", LONG).await.with_max_scheduled(10);
        let now = now_micros();
        assert_eq!(q.refill_room().await.unwrap(), None, "nothing spilled yet");
        // 15 retries, the later ones scheduled first: the 10 due first stay.
        let items: Vec<_> = (0..15)
            .rev()
            .map(|n| (item(n), now + 60_000_000 + n as i64 * 1000))
            .collect();
        q.schedule(&items[..8]).await.unwrap();
        assert_eq!(q.refill_room().await.unwrap(), None, "8 of 10 fit");
        q.schedule(&items[8..]).await.unwrap();
        let kept = members(&q).await;
        let expected: Vec<String> = (0..10)
            .map(|n| format!("{}|{}", item(n).delivery_id, item(n).endpoint_id))
            .collect();
        assert_eq!(kept, expected);
        assert_eq!(
            q.refill_room().await.unwrap(),
            Some(0),
            "spilled, still full"
        );

        // Ready entries not handed out hold a refill back too.
        q.promote_due(now + 70_000_000).await.unwrap();
        assert_eq!(q.depth().await.unwrap().scheduled, 0);
        let backlog: Vec<_> = (100..100 + REFILL_MAX_READY as usize + 1)
            .map(item)
            .collect();
        q.push(&backlog).await.unwrap();
        assert_eq!(
            q.refill_room().await.unwrap(),
            Some(0),
            "a ready backlog waits"
        );
        let mut popped = Vec::new();
        loop {
            let got = q.pop(1000, Duration::ZERO).await.unwrap();
            if got.is_empty() {
                break;
            }
            popped.extend(got);
        }
        assert_eq!(q.refill_room().await.unwrap(), Some(10), "room: the bound");
        assert_eq!(
            q.refill_room().await.unwrap(),
            None,
            "the refill cleared it"
        );
        q.mark_spilled(now).await.unwrap();
        assert_eq!(q.refill_room().await.unwrap(), Some(10));

        let unbounded = queue(&p, "c2", LONG).await.with_max_scheduled(0);
        unbounded.schedule(&items).await.unwrap();
        assert_eq!(unbounded.depth().await.unwrap().scheduled, 15);
        assert_eq!(unbounded.refill_room().await.unwrap(), None);
        q.ack(&popped).await.unwrap();
        cleanup(&p).await;
    }

    fn ids(leases: &[Lease]) -> Vec<String> {
        leases.iter().map(|l| l.item.delivery_id.clone()).collect()
    }

    fn now_micros() -> i64 {
        crate::time::now_micros()
    }

    #[tokio::test]
    async fn unreachable_redis_is_unavailable() {
        let err = RedisQueue::connect("redis://127.0.0.1:1", "x", "c", LONG)
            .await
            .err()
            .expect("connecting to a closed port fails");
        assert!(
            matches!(err, Error::Unavailable(ref m) if m.starts_with("redis: ")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn push_pop_ack() {
        let p = prefix();
        let q = fresh(&p, "c1", LONG).await;
        let ready = format!("{{{p}}}:ready");
        q.push(&[item(1), item(2), item(3)]).await.unwrap();
        assert_eq!(cmd_u64(&["XLEN", &ready]).await, 3);

        let first = q.pop(2, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&first), ["dlv_00001", "dlv_00002"]);
        assert_eq!(first[0].item, item(1));
        let rest = q.pop(10, Duration::from_millis(50)).await.unwrap();
        assert_eq!(ids(&rest), ["dlv_00003"]);
        assert!(q.pop(10, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(
            q.depth().await.unwrap(),
            Depth {
                ready: 0,
                scheduled: 0,
                leased: 3
            }
        );

        q.ack(&first).await.unwrap();
        q.ack(&rest).await.unwrap();
        // Acked entries leave the stream (no MAXLEN needed).
        assert_eq!(cmd_u64(&["XLEN", &ready]).await, 0);
        assert_eq!(q.depth().await.unwrap(), Depth::default());
        assert!(q.pop(10, Duration::ZERO).await.unwrap().is_empty());
        q.ack(&[]).await.unwrap();
        q.push(&[]).await.unwrap();
        assert!(!q.lost_data().await.unwrap());
        cleanup(&p).await;
    }

    #[tokio::test]
    async fn pop_blocks_up_to_wait_without_stalling_other_commands() {
        let p = prefix();
        let q = Arc::new(fresh(&p, "c1", LONG).await);

        let start = std::time::Instant::now();
        assert!(
            q.pop(5, Duration::from_millis(400))
                .await
                .unwrap()
                .is_empty()
        );
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(350),
            "returned after {waited:?}"
        );
        assert!(waited < Duration::from_secs(3), "returned after {waited:?}");

        // While a pop blocks, commands on the same queue go through.
        let popper = {
            let q = q.clone();
            tokio::spawn(async move { q.pop(5, Duration::from_secs(10)).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = std::time::Instant::now();
        q.depth().await.unwrap();
        q.push(&[item(9)]).await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "commands stalled by a blocking read"
        );
        let got = tokio::time::timeout(Duration::from_secs(3), popper)
            .await
            .expect("pop returns early when something is pushed")
            .unwrap();
        assert_eq!(ids(&got), ["dlv_00009"]);
        q.ack(&got).await.unwrap();
        cleanup(&p).await;
    }

    #[tokio::test]
    async fn promote_moves_only_due_items() {
        let p = prefix();
        let q = fresh(&p, "c1", LONG).await;
        let now = now_micros();
        q.schedule(&[
            (item(1), now - 1_000_000),
            (item(2), now + 3_600_000_000),
            (item(3), now),
        ])
        .await
        .unwrap();
        // A retry of the same delivery replaces the earlier one.
        q.schedule(&[(item(2), now + 7_200_000_000)]).await.unwrap();
        assert_eq!(cmd_u64(&["ZCARD", &format!("{{{p}}}:scheduled")]).await, 3);
        assert!(q.pop(10, Duration::ZERO).await.unwrap().is_empty());

        assert_eq!(q.promote_due(now - 2_000_000).await.unwrap(), 0);
        assert_eq!(q.promote_due(now).await.unwrap(), 2);
        assert_eq!(
            q.depth().await.unwrap(),
            Depth {
                ready: 2,
                scheduled: 1,
                leased: 0
            }
        );
        let got = q.pop(10, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&got), ["dlv_00001", "dlv_00003"]);
        assert_eq!(got[1].item, item(3));
        q.ack(&got).await.unwrap();
        assert_eq!(q.promote_due(now + 3_600_000_000).await.unwrap(), 0);
        assert_eq!(q.promote_due(now + 7_200_000_000).await.unwrap(), 1);
        assert_eq!(
            ids(&q.pop(10, Duration::ZERO).await.unwrap()),
            ["dlv_00002"]
        );
        cleanup(&p).await;
    }

    #[tokio::test]
    async fn concurrent_promotes_move_each_item_once() {
        let p = prefix();
        let a = Arc::new(fresh(&p, "a", LONG).await);
        let b = Arc::new(queue(&p, "b", LONG).await);
        let now = now_micros();
        // More than two script batches.
        let items: Vec<_> = (0..2500).map(|n| (item(n), now - n as i64)).collect();
        for chunk in items.chunks(500) {
            a.schedule(chunk).await.unwrap();
        }
        let (ma, mb) = tokio::join!(a.promote_due(now), b.promote_due(now));
        assert_eq!(ma.unwrap() + mb.unwrap(), 2500);
        assert_eq!(cmd_u64(&["XLEN", &format!("{{{p}}}:ready")]).await, 2500);
        assert_eq!(cmd_u64(&["ZCARD", &format!("{{{p}}}:scheduled")]).await, 0);

        let mut seen = HashSet::new();
        loop {
            let got = a.pop(1000, Duration::ZERO).await.unwrap();
            if got.is_empty() {
                break;
            }
            for lease in &got {
                assert!(
                    seen.insert(lease.item.delivery_id.clone()),
                    "duplicate {lease:?}"
                );
            }
            a.ack(&got).await.unwrap();
        }
        assert_eq!(seen.len(), 2500);
        assert_eq!(a.depth().await.unwrap(), Depth::default());
        cleanup(&p).await;
    }

    #[tokio::test]
    async fn consumers_never_share_entries() {
        let p = prefix();
        let a = Arc::new(fresh(&p, "a", LONG).await);
        let b = Arc::new(queue(&p, "b", LONG).await);
        let items: Vec<_> = (0..300).map(item).collect();
        a.push(&items).await.unwrap();

        let drain = |q: Arc<RedisQueue>| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let leases = q.pop(7, Duration::from_millis(100)).await.unwrap();
                    if leases.is_empty() {
                        return got;
                    }
                    q.ack(&leases).await.unwrap();
                    got.extend(ids(&leases));
                }
            })
        };
        let (ga, gb) = tokio::join!(drain(a.clone()), drain(b.clone()));
        let (ga, gb) = (ga.unwrap(), gb.unwrap());
        assert!(!ga.is_empty() && !gb.is_empty(), "both consumers got work");
        let sa: HashSet<_> = ga.iter().collect();
        let sb: HashSet<_> = gb.iter().collect();
        assert_eq!(sa.len(), ga.len());
        assert_eq!(sb.len(), gb.len());
        assert!(sa.is_disjoint(&sb), "an entry went to both consumers");
        assert_eq!(sa.len() + sb.len(), 300);
        cleanup(&p).await;
    }

    #[tokio::test]
    async fn unacked_entry_is_reclaimed_after_the_lease() {
        let p = prefix();
        let lease = Duration::from_millis(200);
        let crashed = fresh(&p, "crashed", lease).await;
        let other = queue(&p, "other", lease).await;
        crashed.push(&[item(1), item(2)]).await.unwrap();
        let taken = crashed.pop(1, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&taken), ["dlv_00001"]);

        // Within the lease the other consumer gets only the untaken entry.
        let first = other.pop(10, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&first), ["dlv_00002"]);
        other.ack(&first).await.unwrap();
        assert!(other.pop(10, Duration::ZERO).await.unwrap().is_empty());

        tokio::time::sleep(Duration::from_millis(300)).await;
        let reclaimed = other.pop(10, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&reclaimed), ["dlv_00001"]);
        assert_eq!(reclaimed[0].token, taken[0].token);
        // Reclaimed once: not handed out again while the new lease runs.
        assert!(other.pop(10, Duration::ZERO).await.unwrap().is_empty());
        assert!(crashed.pop(10, Duration::ZERO).await.unwrap().is_empty());
        other.ack(&reclaimed).await.unwrap();
        // A late ack by the first holder is harmless.
        crashed.ack(&taken).await.unwrap();
        assert_eq!(other.depth().await.unwrap(), Depth::default());
        cleanup(&p).await;
    }

    #[tokio::test]
    async fn lost_stream_is_recovered_without_reconnecting() {
        let p = prefix();
        let q = Arc::new(fresh(&p, "c1", LONG).await);
        let ready = format!("{{{p}}}:ready");
        q.push(&[item(1)]).await.unwrap();
        let got = q.pop(10, Duration::ZERO).await.unwrap();
        q.ack(&got).await.unwrap();

        // Data loss: the stream and its group are gone; a push recreates the stream only.
        cmd_u64(&["DEL", &ready]).await;
        q.push(&[item(2)]).await.unwrap();
        let got = q.pop(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(
            ids(&got),
            ["dlv_00002"],
            "entries pushed after the loss are read"
        );
        q.ack(&got).await.unwrap();
        assert!(q.lost_data().await.unwrap(), "the loss is reported");
        assert!(!q.lost_data().await.unwrap(), "once");

        // The stream deleted under a blocked read.
        let popper = {
            let q = q.clone();
            tokio::spawn(async move { q.pop(10, Duration::from_secs(5)).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        cmd_u64(&["DEL", &ready]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        q.push(&[item(3)]).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(4), popper)
            .await
            .expect("the blocked pop recovers")
            .unwrap();
        assert_eq!(ids(&got), ["dlv_00003"]);
        q.ack(&got).await.unwrap();
        assert!(q.lost_data().await.unwrap());
        assert!(!q.lost_data().await.unwrap());

        // Only the group lost (the stream kept): a pop that runs into NOGROUP recovers.
        q.push(&[item(4)]).await.unwrap();
        let _: () = redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(&ready)
            .arg(GROUP)
            .query_async(&mut raw().await)
            .await
            .unwrap();
        let got = q.pop(10, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&got), ["dlv_00004"]);
        q.ack(&got).await.unwrap();
        assert!(q.lost_data().await.unwrap());
        assert_eq!(q.depth().await.unwrap(), Depth::default());
        cleanup(&p).await;
    }

    #[tokio::test]
    async fn lost_epoch_is_reported_once_to_every_replica() {
        let p = prefix();
        let a = fresh(&p, "a", LONG).await;
        let b = queue(&p, "b", LONG).await;
        assert!(!b.lost_data().await.unwrap(), "b found a's epoch");

        // Everything of this prefix gone, as after a Redis restart without persistence.
        cleanup(&p).await;
        assert!(a.lost_data().await.unwrap());
        assert!(!a.lost_data().await.unwrap());
        // b sees the epoch a set since: a change, so a loss.
        assert!(b.lost_data().await.unwrap());
        assert!(!b.lost_data().await.unwrap());
        assert!(!a.lost_data().await.unwrap());

        // And the queue works on.
        a.push(&[item(1)]).await.unwrap();
        let got = b.pop(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(ids(&got), ["dlv_00001"]);
        b.ack(&got).await.unwrap();
        cleanup(&p).await;
    }

    #[tokio::test]
    async fn hasten_makes_only_scheduled_items_ready() {
        let p = prefix();
        let q = fresh(&p, "c2", LONG).await;
        super::super::contract::hasten_makes_only_scheduled_items_ready(&q).await;
        cleanup(&p).await;
    }

    #[tokio::test]
    async fn oldest_due_is_the_longest_waiting_entry() {
        let p = prefix();
        let q = fresh(&p, "c1", LONG).await;
        super::super::contract::oldest_due_is_the_longest_waiting_entry(&q).await;
        cleanup(&p).await;
    }

    #[tokio::test]
    async fn depth_counts() {
        let p = prefix();
        let q = fresh(&p, "c1", LONG).await;
        assert_eq!(q.depth().await.unwrap(), Depth::default());
        let now = now_micros();
        q.push(&[item(1), item(2), item(3)]).await.unwrap();
        q.schedule(&[(item(4), now + 60_000_000), (item(5), now + 60_000_000)])
            .await
            .unwrap();
        let got = q.pop(1, Duration::ZERO).await.unwrap();
        assert_eq!(
            q.depth().await.unwrap(),
            Depth {
                ready: 2,
                scheduled: 2,
                leased: 1
            }
        );
        q.ack(&got).await.unwrap();
        assert_eq!(
            q.depth().await.unwrap(),
            Depth {
                ready: 2,
                scheduled: 2,
                leased: 0
            }
        );
        cleanup(&p).await;
    }
}
