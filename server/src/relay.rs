//! Cross-replica fan-out: a tail on any replica sees the events committed on every one.
//!
//! Replicas that share PostgreSQL and Redis each have their own bus (`bus.rs`); the relay
//! is then the only sender on it, so the bus stays in sequence order across replicas.
//!
//! Why reading storage is enough: sequence numbers are handed out under the counter row
//! lock, held until commit, so they are committed in order, and once `n` is visible every
//! number below it is visible or will never exist. A read of `seq > head` is therefore
//! always a gap-free continuation of what the bus carried, whoever committed it. Redis
//! only says *when* to read:
//!
//! - **announce**: after a commit, the replica PUBLISHes its last sequence number on
//!   `{prefix}:bus` (the queue's hash tag). Coalesced: while one PUBLISH is on its way,
//!   later commits only raise the number the next one carries.
//! - **listen**: one SUBSCRIBE connection per replica, pinged, reconnected with backoff
//!   (on a Redis Cluster to one node, the next seed after each failure: a PUBLISH reaches
//!   every node); it hands announcements to the pump, and after each (re)subscription
//!   asks for a read, since announcements made meanwhile are gone.
//! - **pump**: holds `head`, the number up to which the bus has carried every committed
//!   event, and on each wake-up reads `seq > head` of every tenant, one query for all the
//!   announcements that arrived meanwhile, however many tails there are. Its own
//!   replica's commits need no read when they follow `head` directly (the writer hands
//!   them over, messages built); another replica's commit in between sends it to
//!   storage. A poll every second covers announcements lost on the way (Redis restarting,
//!   a broken connection): a lost message delays events, never loses them.
//!
//! With no tail listening, nothing is read: `head` just follows the database's counter,
//! since a tail that starts later catches up from storage anyway (`tail.rs`).

use std::{fmt::Display, sync::Arc, time::Duration};

use anyhow::anyhow;
use futures::StreamExt;
use redis::Client;
use tokio::{
    sync::{mpsc, watch},
    time::{MissedTickBehavior, interval, sleep, timeout},
};
use tokio_util::sync::CancellationToken;

use crate::{
    bus::{Bus, LiveEvent},
    error::{Error, Result},
    redis_conn::{Conn, Patience, Target},
    store::Store,
};

/// Events read from storage per query.
const READ_PAGE: u64 = 1000;
/// How late an event can be when its announcement was lost.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Local commits waiting for the pump; past that they are dropped and read from storage.
const LOCAL_QUEUE: usize = 1024;
/// Announcements waiting for the pump; past that they are dropped, as the pump has a
/// wake-up pending that covers them.
const ANNOUNCEMENT_QUEUE: usize = 1024;
/// What the listener hands over to ask for a read: more than any `head`.
const READ_NOW: i64 = i64::MAX;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the subscription is pinged, so a silently dead connection is noticed.
const PING_EVERY: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The channel the replicas of `prefix` announce their commits on.
pub fn channel(prefix: &str) -> String {
    format!("{{{prefix}}}:bus")
}

/// A commit of this replica, as the writer hands it to the pump.
pub struct LocalCommit {
    /// The sequence number just before the commit's first event.
    pub after: i64,
    /// The commit's last event's.
    pub last: i64,
    /// The events, when their numbers are consecutive and tails were listening;
    /// otherwise empty, and the pump reads storage if tails need them.
    pub events: Vec<Arc<LiveEvent>>,
}

/// The writer's side of the relay (held by the bus).
pub struct Inlet {
    local: mpsc::Sender<LocalCommit>,
    committed: watch::Sender<i64>,
}

impl Inlet {
    /// Never waits: a commit that does not fit reaches the bus through storage after its
    /// announcement (or the poll).
    pub fn hand(&self, commit: LocalCommit) {
        let last = commit.last;
        let _ = self.local.try_send(commit);
        self.committed.send_if_modified(|announced| {
            let higher = last > *announced;
            if higher {
                *announced = last;
            }
            higher
        });
    }
}

/// Starts the relay of a replica and returns the bus it feeds.
pub async fn spawn(
    store: Store,
    redis_url: &str,
    prefix: &str,
    capacity: usize,
    shutdown: CancellationToken,
) -> Result<Arc<Bus>> {
    // The URL may hold a password: never echo it.
    let target = Target::parse(redis_url)
        .map_err(|e| Error::Internal(anyhow!("redis: invalid redis_url: {e}")))?;
    let conn = target
        .shared(Patience {
            connect_timeout: CONNECT_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
            retries: 1,
            max_delay: Duration::from_secs(1),
        })
        .await
        .map_err(|e| Error::Unavailable(format!("redis: {e}")))?;
    let head = store.head_seq().await?;
    let channel = channel(prefix);
    let (local, local_rx) = mpsc::channel(LOCAL_QUEUE);
    let (committed, committed_rx) = watch::channel(head);
    let (announced, announced_rx) = mpsc::channel(ANNOUNCEMENT_QUEUE);
    let bus = Arc::new(Bus::relayed(capacity, Inlet { local, committed }));
    tokio::spawn(announce(
        conn,
        channel.clone(),
        committed_rx,
        shutdown.clone(),
    ));
    tokio::spawn(listen(target.nodes(), channel, announced, shutdown.clone()));
    let pump = Pump {
        store,
        bus: bus.clone(),
        head,
        storage: Outage::new("relay: reading new events failed; retrying"),
    };
    tokio::spawn(pump.run(local_rx, announced_rx, shutdown));
    Ok(bus)
}

/// PUBLISHes the highest sequence number this replica committed, whenever it rises.
async fn announce(
    mut conn: Conn,
    channel: String,
    mut committed: watch::Receiver<i64>,
    shutdown: CancellationToken,
) {
    let mut outage = Outage::new("relay: announcing commits failed; other replicas poll");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = committed.changed() => if changed.is_err() {
                return;
            },
        }
        let seq = *committed.borrow_and_update();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(seq)
            .query_async(&mut conn)
            .await;
        match sent {
            Ok(_) => outage.over(),
            Err(e) => outage.failed(&e),
        }
    }
}

/// Follows the channel for as long as the server runs, reconnecting with backoff; on a
/// cluster, to the next seed each time (any node hears every PUBLISH).
async fn listen(
    nodes: Vec<Client>,
    channel: String,
    out: mpsc::Sender<i64>,
    shutdown: CancellationToken,
) {
    let mut outage = Outage::new("relay: subscription to announcements lost; reconnecting");
    let mut backoff = BACKOFF_MIN;
    let Some(first) = nodes.first() else {
        return;
    };
    let mut node = 0;
    loop {
        let client = nodes.get(node).unwrap_or(first);
        let ended = tokio::select! {
            _ = shutdown.cancelled() => return,
            ended = follow(client, &channel, &out, || {
                outage.over();
                backoff = BACKOFF_MIN;
            }) => ended,
        };
        outage.failed(&ended);
        node = (node + 1) % nodes.len();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One subscription, until its connection fails; returns why.
async fn follow(
    client: &Client,
    channel: &str,
    out: &mpsc::Sender<i64>,
    subscribed: impl FnOnce(),
) -> anyhow::Error {
    let mut pubsub = match timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => return e.into(),
        Err(_) => return anyhow!("connecting timed out"),
    };
    if let Err(e) = pubsub.subscribe(channel).await {
        return e.into();
    }
    subscribed();
    // Whatever was announced while not subscribed is gone: read.
    let _ = out.try_send(READ_NOW);
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            message = stream.next() => match message {
                // Anything but a number is not ours to act on.
                Some(message) => if let Ok(seq) = message.get_payload::<i64>() {
                    // Full: the pump has a wake-up pending, which covers this one.
                    let _ = out.try_send(seq);
                },
                None => return anyhow!("connection closed"),
            },
            _ = ping.tick() => match timeout(RESPONSE_TIMEOUT, sink.ping::<redis::Value>()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return e.into(),
                Err(_) => return anyhow!("ping timed out"),
            },
        }
    }
}

/// The only sender on a relayed bus; see the module doc.
struct Pump {
    store: Store,
    bus: Arc<Bus>,
    /// Every committed event up to here went on the bus, or went by while no tail
    /// listened.
    head: i64,
    storage: Outage,
}

impl Pump {
    async fn run(
        mut self,
        mut local: mpsc::Receiver<LocalCommit>,
        mut announced: mpsc::Receiver<i64>,
        shutdown: CancellationToken,
    ) {
        let mut poll = interval(POLL_EVERY);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        poll.reset();
        loop {
            // Local commits first: the echo of one's own announcement then finds it
            // already sent, with no read.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                Some(commit) = local.recv() => self.local(commit).await,
                Some(seq) = announced.recv() => {
                    let mut top = seq;
                    while let Ok(more) = announced.try_recv() {
                        top = top.max(more);
                    }
                    if top > self.head {
                        self.read().await;
                    }
                }
                _ = poll.tick() => self.poll().await,
            }
        }
    }

    async fn local(&mut self, commit: LocalCommit) {
        if commit.last <= self.head {
            return;
        }
        // Everything up to `last` is committed, so no tail that starts now can miss it.
        if self.bus.receiver_count() == 0 {
            self.head = commit.last;
            return;
        }
        if commit.after == self.head && !commit.events.is_empty() {
            for event in commit.events {
                self.bus.send(event);
            }
            self.head = commit.last;
            return;
        }
        self.read().await;
    }

    /// Sends every event committed after `head`, a page per query.
    async fn read(&mut self) {
        // The poll keeps `head` recent meanwhile.
        if self.bus.receiver_count() == 0 {
            return;
        }
        loop {
            let page = match self.store.events_since(self.head, READ_PAGE).await {
                Ok(page) => page,
                Err(e) => return self.storage.failed(&e),
            };
            self.storage.over();
            let full = page.len() as u64 == READ_PAGE;
            for event in &page {
                self.bus.send(Arc::new(LiveEvent::of(event)));
                self.head = event.seq;
            }
            if !full {
                return;
            }
        }
    }

    async fn poll(&mut self) {
        if self.bus.receiver_count() > 0 {
            return self.read().await;
        }
        // Announcements are not trusted with `head`: a stray one (another deployment on
        // the same prefix) must not make the bus skip events. The counter is the truth.
        match self.store.head_seq().await {
            Ok(seq) => {
                self.storage.over();
                self.head = self.head.max(seq);
            }
            Err(e) => self.storage.failed(&e),
        }
    }
}

/// Logs a failure once when it starts and once when it ends, not at every attempt.
struct Outage {
    what: &'static str,
    down: bool,
}

impl Outage {
    fn new(what: &'static str) -> Outage {
        Outage { what, down: false }
    }

    fn failed(&mut self, error: &dyn Display) {
        if !self.down {
            self.down = true;
            tracing::warn!(error = %error, "{}", self.what);
        }
    }

    fn over(&mut self) {
        if self.down {
            self.down = false;
            tracing::info!("{}: recovered", self.what.split(';').next().unwrap_or(""));
        }
    }
}
