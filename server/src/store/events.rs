//! Events and the outbox rows (deliveries) written with them.
//!
//! `commit_events` is the only writer of events. It first bumps the `events` counter
//! row, which serialises writers (a row lock in PostgreSQL, the write lock in SQLite):
//! sequence numbers are therefore handed out in commit order, and a reader that has
//! seen `seq = n` has seen every committed event below `n`.

use std::collections::HashMap;

use sea_orm::{
    DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait, TryIntoModel, prelude::*,
};

use super::{
    Store,
    entities::{delivery, endpoint, event, sequence},
    page::Page,
    pg,
    subscribers::Subscribers,
};
use crate::{
    error::{Error, Result},
    filter::Filter,
    ids::{self, Kind},
    time::now_micros,
};

/// An event validated and ready to store.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub id: String,
    pub tenant_id: String,
    pub event_type: String,
    pub environment: String,
    /// `None` means "when received".
    pub occurred_at: Option<i64>,
    pub payload: String,
    pub idempotency_key: Option<String>,
}

/// What became of one `NewEvent`.
#[derive(Clone, Debug)]
pub struct Committed {
    pub event: event::Model,
    /// The idempotency key matched an earlier event, which is `event`.
    pub duplicate: bool,
    /// Deliveries created for the event (for a duplicate: by its original).
    pub deliveries: u32,
    /// The deliveries this commit created for the queue (empty for a duplicate); those
    /// taken over by this process's worker are in [`Taken`] instead.
    pub new_deliveries: Vec<crate::queue::QueueItem>,
}

/// Decides, while a publish batch is built, which of its new deliveries this process's
/// worker takes at once (PostgreSQL's one-statement path; see `delivery::handoff`).
pub trait Takeover: Send {
    /// `Some(until)`: the delivery to `endpoint_id` is stored claimed until then and
    /// handed to the worker; `None`: it goes through the queue.
    fn take(&mut self, endpoint_id: &str) -> Option<i64>;

    /// Gives back what `take` took: the batch was not stored and will be built again.
    fn release(&mut self) {}
}

/// Takes nothing over: every new delivery goes through the queue.
pub struct NoTakeover;

impl Takeover for NoTakeover {
    fn take(&mut self, _endpoint_id: &str) -> Option<i64> {
        None
    }
}

/// The deliveries of a commit stored already claimed for this process's worker, as
/// stored, and the version (`sequences.attempts`) of the endpoints and tenants as the
/// commit saw them.
pub struct Taken {
    pub deliveries: Vec<delivery::Model>,
    pub context_version: i64,
}

/// Which events a read wants.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub tenant_id: String,
    /// Catalog names to keep; `None` keeps all.
    pub types: Option<Vec<&'static str>>,
    /// Only this environment; `None` keeps all.
    pub environment: Option<String>,
}

impl EventQuery {
    fn apply(&self, mut select: Select<event::Entity>) -> Select<event::Entity> {
        select = select.filter(event::Column::TenantId.eq(self.tenant_id.clone()));
        if let Some(types) = &self.types {
            select = select.filter(event::Column::EventType.is_in(types.iter().copied()));
        }
        if let Some(env) = &self.environment {
            select = select.filter(event::Column::Environment.eq(env.clone()));
        }
        select
    }
}

// Keeps every multi-row INSERT well under SQLite's bound-parameter limit.
const INSERT_CHUNK: usize = 500;
const EVENTS_COUNTER: &str = "events";

impl Store {
    /// Stores `events` and their deliveries in one transaction; all or nothing.
    ///
    /// `subscribers` is the caller's copy of the endpoints (the writer's): on PostgreSQL
    /// a batch without idempotency keys is stored in one statement matched against it
    /// (`events_pg.rs`), where `takeover` may take deliveries for this process's worker;
    /// otherwise in a transaction that reads the endpoints itself and queues every
    /// delivery.
    pub async fn commit_events(
        &self,
        events: Vec<NewEvent>,
        idempotency_window_micros: i64,
        subscribers: &mut Subscribers,
        takeover: &mut dyn Takeover,
    ) -> Result<(Vec<Committed>, Option<Taken>)> {
        if pg::is_postgres(&self.db)
            && events.iter().all(|e| e.idempotency_key.is_none())
            && let Some(done) =
                super::events_pg::commit(&self.db, subscribers, &events, now_micros(), takeover)
                    .await?
        {
            return Ok(done);
        }
        let txn = self.db.begin().await?;
        let committed = commit_in(&txn, events, idempotency_window_micros).await?;
        txn.commit().await?;
        Ok((committed, None))
    }

    pub async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<event::Model>> {
        Ok(event::Entity::find()
            .filter(event::Column::Id.eq(id))
            .filter(event::Column::TenantId.eq(tenant_id))
            .one(&self.db)
            .await?)
    }

    /// A page of events, newest first, within `[after, before)` received times.
    pub async fn list_events(
        &self,
        query: &EventQuery,
        received_after: Option<i64>,
        received_before: Option<i64>,
        page: &Page,
    ) -> Result<(Vec<event::Model>, String)> {
        let mut select = query.apply(event::Entity::find());
        if let Some(t) = received_after {
            select = select.filter(event::Column::ReceivedAt.gte(t));
        }
        if let Some(t) = received_before {
            select = select.filter(event::Column::ReceivedAt.lt(t));
        }
        if let Some(seq) = page.after_i64()? {
            select = select.filter(event::Column::Seq.lt(seq));
        }
        let rows = select
            .order_by_desc(event::Column::Seq)
            .limit(page.size + 1)
            .all(&self.db)
            .await?;
        Ok(page.finish(rows, |e| e.seq.to_string()))
    }

    /// Up to `limit` events after `seq`, oldest first: a tail's catch-up read.
    pub async fn events_after(
        &self,
        query: &EventQuery,
        seq: i64,
        limit: u64,
    ) -> Result<Vec<event::Model>> {
        Ok(query
            .apply(event::Entity::find())
            .filter(event::Column::Seq.gt(seq))
            .order_by_asc(event::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Up to `limit` events of every tenant after `seq`, oldest first: what the relay
    /// reads to feed the bus with other replicas' commits (see `relay.rs`).
    pub async fn events_since(&self, seq: i64, limit: u64) -> Result<Vec<event::Model>> {
        Ok(event::Entity::find()
            .filter(event::Column::Seq.gt(seq))
            .order_by_asc(event::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// The highest sequence number committed so far.
    pub async fn head_seq(&self) -> Result<i64> {
        let row = sequence::Entity::find_by_id(EVENTS_COUNTER)
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("events counter row is missing")))?;
        Ok(row.value)
    }

    /// The position just before the tenant's first event received at or after `micros`.
    pub async fn seq_before_time(&self, tenant_id: &str, micros: i64) -> Result<i64> {
        let first = event::Entity::find()
            .filter(event::Column::TenantId.eq(tenant_id))
            .filter(event::Column::ReceivedAt.gte(micros))
            .order_by_asc(event::Column::Seq)
            .one(&self.db)
            .await?;
        match first {
            Some(e) => Ok(e.seq - 1),
            None => self.head_seq().await,
        }
    }
}

async fn commit_in(
    txn: &DatabaseTransaction,
    events: Vec<NewEvent>,
    window_micros: i64,
) -> Result<Vec<Committed>> {
    let n = events.len() as i64;
    // Taking the counter row first is what orders commits; see the module doc.
    let top = sequence::Entity::update_many()
        .col_expr(
            sequence::Column::Value,
            Expr::col(sequence::Column::Value).add(n),
        )
        .filter(sequence::Column::Name.eq(EVENTS_COUNTER))
        .exec_with_returning(txn)
        .await?
        .first()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("events counter row is missing")))?
        .value;
    let mut next_seq = top - n + 1;
    let now = now_micros();

    let mut seen = earlier_duplicates(txn, &events, now - window_micros).await?;
    let mut tenants: Vec<String> = events.iter().map(|e| e.tenant_id.clone()).collect();
    tenants.sort();
    tenants.dedup();
    let endpoints = Store::enabled_endpoints(txn, tenants).await?;
    let mut filters: HashMap<&str, Filter> = HashMap::new();
    for ep in &endpoints {
        if let Some(filter) = Filter::stored(&ep.filter_list()) {
            filters.insert(ep.id.as_str(), filter);
        }
    }

    let mut results = Vec::with_capacity(events.len());
    let mut event_rows = Vec::new();
    let mut delivery_rows = Vec::new();
    for new in events {
        if let Some(key) = &new.idempotency_key
            && let Some(original) = seen.get(&(new.tenant_id.clone(), key.clone()))
        {
            results.push(Committed {
                event: original.event.clone(),
                duplicate: true,
                deliveries: original.deliveries,
                new_deliveries: Vec::new(),
            });
            continue;
        }
        let model = event::Model {
            seq: next_seq,
            id: new.id,
            tenant_id: new.tenant_id,
            event_type: new.event_type,
            environment: new.environment,
            occurred_at: new.occurred_at.unwrap_or(now),
            received_at: now,
            payload: new.payload,
            idempotency_key: new.idempotency_key,
        };
        next_seq += 1;
        let mut new_deliveries = Vec::new();
        for ep in matching(&endpoints, &filters, &model) {
            let id = ids::new(Kind::Delivery);
            new_deliveries.push(crate::queue::QueueItem {
                delivery_id: id.clone(),
                endpoint_id: ep.id.clone(),
            });
            delivery_rows.push(super::deliveries::new_delivery(
                id,
                &model.tenant_id,
                &model.id,
                &ep.id,
                &model.event_type,
                now,
            ));
        }
        let committed = Committed {
            event: model.clone(),
            duplicate: false,
            deliveries: new_deliveries.len() as u32,
            new_deliveries,
        };
        if let Some(key) = &model.idempotency_key {
            let original = Committed {
                new_deliveries: Vec::new(),
                ..committed.clone()
            };
            seen.insert((model.tenant_id.clone(), key.clone()), original);
        }
        event_rows.push(model);
        results.push(committed);
    }

    if pg::is_postgres(txn) {
        insert_pg(txn, event_rows, delivery_rows).await?;
        return Ok(results);
    }
    for chunk in chunks(event_rows) {
        event::Entity::insert_many(chunk.into_iter().map(event::ActiveModel::from))
            .exec_without_returning(txn)
            .await?;
    }
    for chunk in chunks(delivery_rows) {
        delivery::Entity::insert_many(chunk)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(results)
}

/// The events and their deliveries in one statement of fixed text (see `store::pg`).
/// A data-modifying `WITH` always runs to completion, and the deliveries' references
/// are checked at the end of the statement (by triggers, see migration 6), when the
/// events are there.
async fn insert_pg(
    txn: &DatabaseTransaction,
    events: Vec<event::Model>,
    deliveries: Vec<delivery::ActiveModel>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    const SQL: &str = "WITH new_events AS (
            INSERT INTO events (seq, id, tenant_id, event_type, environment, occurred_at,
                                received_at, payload, idempotency_key)
            SELECT seq, id, tenant_id, event_type, environment, occurred_at, received_at,
                   payload, NULLIF(idempotency_key, '')
            FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                        $6::bigint[], $7::bigint[], $8::text[], $9::text[])
                 AS e(seq, id, tenant_id, event_type, environment, occurred_at, received_at,
                      payload, idempotency_key)
        )
        INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type,
                                idempotency_token, status, attempts, next_attempt_at,
                                created_at, updated_at)
        SELECT id, tenant_id, event_id, endpoint_id, event_type, idempotency_token, status,
               0, now_micros, now_micros, now_micros
        FROM UNNEST($10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                    $15::text[], $16::text[], $17::bigint[])
             AS d(id, tenant_id, event_id, endpoint_id, event_type, idempotency_token, status,
                  now_micros)";
    let deliveries: Vec<delivery::Model> = deliveries
        .into_iter()
        .map(|d| d.try_into_model())
        .collect::<std::result::Result<_, _>>()?;
    let values = vec![
        pg::bigints(events.iter().map(|e| e.seq)),
        pg::texts(events.iter().map(|e| e.id.clone())),
        pg::texts(events.iter().map(|e| e.tenant_id.clone())),
        pg::texts(events.iter().map(|e| e.event_type.clone())),
        pg::texts(events.iter().map(|e| e.environment.clone())),
        pg::bigints(events.iter().map(|e| e.occurred_at)),
        pg::bigints(events.iter().map(|e| e.received_at)),
        pg::texts(events.iter().map(|e| e.payload.clone())),
        pg::opt_texts(events.iter().map(|e| e.idempotency_key.clone())),
        pg::texts(deliveries.iter().map(|d| d.id.clone())),
        pg::texts(deliveries.iter().map(|d| d.tenant_id.clone())),
        pg::texts(deliveries.iter().map(|d| d.event_id.clone())),
        pg::texts(deliveries.iter().map(|d| d.endpoint_id.clone())),
        pg::texts(deliveries.iter().map(|d| d.event_type.clone())),
        pg::texts(deliveries.iter().map(|d| d.idempotency_token.clone())),
        pg::texts(deliveries.iter().map(|d| d.status.clone())),
        pg::bigints(deliveries.iter().map(|d| d.created_at)),
    ];
    txn.execute(pg::stmt(SQL, values)).await?;
    Ok(())
}

/// The token receivers dedupe on: the same for every attempt, manual retry or replay
/// of one event to one endpoint.
pub fn idempotency_token(event_id: &str, endpoint_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{event_id}/{endpoint_id}").as_bytes());
    format!("msg_{}", &hex::encode(digest)[..32])
}

fn chunks<T>(mut rows: Vec<T>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    while rows.len() > INSERT_CHUNK {
        let rest = rows.split_off(INSERT_CHUNK);
        out.push(std::mem::replace(&mut rows, rest));
    }
    if !rows.is_empty() {
        out.push(rows);
    }
    out
}

fn matching<'a>(
    endpoints: &'a [endpoint::Model],
    filters: &'a HashMap<&str, Filter>,
    event: &'a event::Model,
) -> impl Iterator<Item = &'a endpoint::Model> {
    endpoints.iter().filter(move |ep| {
        ep.tenant_id == event.tenant_id
            && ep.environment == event.environment
            && filters
                .get(ep.id.as_str())
                .is_some_and(|f| f.matches(&event.event_type))
    })
}

/// Earlier events (within the window) that share a tenant and idempotency key with
/// one of `events`. Safe from races because the counter row is already held.
async fn earlier_duplicates(
    txn: &DatabaseTransaction,
    events: &[NewEvent],
    since: i64,
) -> Result<HashMap<(String, String), Committed>> {
    let mut keys_by_tenant: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in events {
        if let Some(key) = &e.idempotency_key {
            keys_by_tenant.entry(&e.tenant_id).or_default().push(key);
        }
    }
    let mut found = HashMap::new();
    for (tenant, keys) in keys_by_tenant {
        let rows = event::Entity::find()
            .filter(event::Column::TenantId.eq(tenant))
            .filter(event::Column::IdempotencyKey.is_in(keys))
            .filter(event::Column::ReceivedAt.gte(since))
            .order_by_asc(event::Column::Seq)
            .all(txn)
            .await?;
        for row in rows {
            let key = (
                row.tenant_id.clone(),
                row.idempotency_key.clone().unwrap_or_default(),
            );
            if found.contains_key(&key) {
                continue;
            }
            let deliveries = delivery::Entity::find()
                .filter(delivery::Column::EventId.eq(row.id.clone()))
                .count(txn)
                .await?;
            found.insert(
                key,
                Committed {
                    event: row,
                    duplicate: true,
                    deliveries: deliveries.try_into().unwrap_or(u32::MAX),
                    new_deliveries: Vec::new(),
                },
            );
        }
    }
    Ok(found)
}
