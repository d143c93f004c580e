//! A publish batch as one statement on PostgreSQL: the counter bump, the events and their
//! deliveries in one round trip and one (implicit) transaction, instead of a transaction
//! of five round trips holding the counter row throughout.
//!
//! The deliveries are matched in memory against the writer's copy of the endpoints
//! ([`Subscribers`]), and the statement checks that the copy is current: it bumps the
//! counter (and so stores anything) only if `sequences.endpoints` still has the copy's
//! version. Otherwise it stores nothing and returns the new version; the copy is reloaded
//! and the batch built again. Events with an idempotency key keep the transaction path,
//! which must look for their originals under the counter's lock.
//!
//! Ordering is as on the transaction path: the counter row's lock is held from the bump to
//! the commit, so sequence numbers are handed out in commit order.
//!
//! The deliveries this process's worker has room for (the [`Takeover`] says which) are
//! inserted already claimed, and returned as rows ([`Taken`]) with the version of
//! what their attempts read of endpoints and tenants: they go to the worker in memory,
//! without the queue's round trips or a claim (see `delivery::handoff`).

use sea_orm::{
    DatabaseConnection, DbErr, RuntimeErr,
    sqlx::{self, PgPool},
};

use super::{
    entities::{delivery, event},
    events::{Committed, NewEvent, Taken, Takeover, idempotency_token},
    subscribers::Subscribers,
};
use crate::{
    delivery::status,
    error::Result,
    ids::{self, Kind},
    queue::QueueItem,
};

/// Builds and runs the batch; `None` when the endpoint set changed under it twice in a
/// row (the caller then takes the transaction path).
pub(super) async fn commit(
    conn: &DatabaseConnection,
    subscribers: &mut Subscribers,
    events: &[NewEvent],
    now: i64,
    takeover: &mut dyn Takeover,
) -> Result<Option<(Vec<Committed>, Option<Taken>)>> {
    let mut tenants: Vec<&str> = events.iter().map(|e| e.tenant_id.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    for _ in 0..2 {
        let version = subscribers.load(conn, &tenants).await?;
        let batch = Batch::build(subscribers, events, now, takeover);
        let outcome = match batch
            .run(conn.get_postgres_connection_pool(), version)
            .await
        {
            Ok(outcome) => outcome,
            Err(err) => {
                // Say an endpoint was deleted meanwhile (its reference check, migration 6):
                // start afresh.
                subscribers.forget();
                return Err(err.into());
            }
        };
        match outcome.base {
            Some(base) => return Ok(Some(batch.committed(base, outcome.attempts_version))),
            None => {
                // Nothing was stored: the rebuilt batch takes its deliveries afresh.
                takeover.release();
                subscribers.reset(outcome.version);
            }
        }
    }
    Ok(None)
}

struct Outcome {
    /// The sequence number before the batch's first; `None`: nothing stored.
    base: Option<i64>,
    /// `sequences.endpoints` as the statement saw it.
    version: i64,
    /// `sequences.attempts` as the statement saw it: the version of the endpoints and
    /// tenants that the taken deliveries' attempts read.
    attempts_version: i64,
}

/// One delivery row to insert.
struct NewDelivery {
    id: String,
    event: usize,
    endpoint_id: String,
    idempotency_token: String,
    /// Claimed by this process's worker until then (taken over), or queued.
    locked_until: Option<i64>,
}

/// The rows of a batch, before the database gave them sequence numbers.
struct Batch {
    events: Vec<event::Model>,
    deliveries: Vec<NewDelivery>,
    now: i64,
}

impl Batch {
    fn build(
        subscribers: &Subscribers,
        events: &[NewEvent],
        now: i64,
        takeover: &mut dyn Takeover,
    ) -> Batch {
        let mut rows = Vec::with_capacity(events.len());
        let mut deliveries = Vec::new();
        for (i, new) in events.iter().enumerate() {
            for sub in subscribers.of(&new.tenant_id).iter() {
                if sub.wants(&new.environment, &new.event_type) {
                    deliveries.push(NewDelivery {
                        id: ids::new(Kind::Delivery),
                        event: i,
                        endpoint_id: sub.id.clone(),
                        idempotency_token: idempotency_token(&new.id, &sub.id),
                        locked_until: takeover.take(&sub.id),
                    });
                }
            }
            rows.push(event::Model {
                seq: 0,
                id: new.id.clone(),
                tenant_id: new.tenant_id.clone(),
                event_type: new.event_type.clone(),
                environment: new.environment.clone(),
                occurred_at: new.occurred_at.unwrap_or(now),
                received_at: now,
                payload: new.payload.clone(),
                idempotency_key: None,
            });
        }
        Batch {
            events: rows,
            deliveries,
            now,
        }
    }

    /// Runs the batch's statement against `version` of the endpoints.
    ///
    /// Bound with sqlx directly rather than through sea-orm's `Statement`: that takes its
    /// values as boxed `Value`s and clones them all once more before binding, so every
    /// payload was copied three times on its way to the wire. Here the arrays borrow the
    /// batch's own strings.
    async fn run(&self, pool: &PgPool, version: i64) -> std::result::Result<Outcome, DbErr> {
        // `c` is empty when the version moved on: then nothing below inserts anything.
        // Data-modifying CTEs run to completion whether or not they are read, and the
        // deliveries' references are checked at the end of the statement (migration 6).
        const SQL: &str = "WITH v AS (
                SELECT value FROM sequences WHERE name = 'endpoints'
            ),
            c AS (
                UPDATE sequences SET value = value + $1
                WHERE name = 'events' AND (SELECT value FROM v) = $2
                RETURNING value - $1 AS base
            ),
            new_events AS (
                INSERT INTO events (seq, id, tenant_id, event_type, environment, occurred_at,
                                    received_at, payload)
                SELECT c.base + e.ord, e.id, e.tenant_id, e.event_type, e.environment,
                       e.occurred_at, $3, e.payload
                FROM c, UNNEST($4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[],
                               $9::text[])
                        WITH ORDINALITY AS e(id, tenant_id, event_type, environment,
                                             occurred_at, payload, ord)
            ),
            new_deliveries AS (
                INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type,
                                        idempotency_token, status, attempts, next_attempt_at,
                                        locked_until, created_at, updated_at)
                SELECT d.id, d.tenant_id, d.event_id, d.endpoint_id, d.event_type,
                       d.idempotency_token, $16, 0, $3, NULLIF(d.locked_until, 0), $3, $3
                FROM c, UNNEST($10::text[], $11::text[], $12::text[], $13::text[],
                               $14::text[], $15::text[], $17::bigint[])
                        AS d(id, tenant_id, event_id, endpoint_id, event_type,
                             idempotency_token, locked_until)
            )
            SELECT (SELECT base FROM c) AS base, (SELECT value FROM v) AS version,
                   (SELECT value FROM sequences WHERE name = 'attempts') AS attempts_version";
        let e = &self.events;
        let d = &self.deliveries;
        // Each text column as one array borrowing the batch's strings: of the events, of
        // the deliveries, and of each delivery's event.
        let of_events = |f: &dyn Fn(&event::Model) -> &str| e.iter().map(f).collect::<Vec<_>>();
        let of_deliveries = |f: &dyn Fn(&NewDelivery) -> &str| d.iter().map(f).collect::<Vec<_>>();
        let of_their_events = |f: &dyn Fn(&event::Model) -> &str| {
            d.iter().map(|d| f(&e[d.event])).collect::<Vec<_>>()
        };
        let (base, version, attempts_version) = sqlx::query_as::<_, (Option<i64>, i64, i64)>(SQL)
            .bind(e.len() as i64)
            .bind(version)
            .bind(self.now)
            .bind(of_events(&|e| &e.id))
            .bind(of_events(&|e| &e.tenant_id))
            .bind(of_events(&|e| &e.event_type))
            .bind(of_events(&|e| &e.environment))
            .bind(e.iter().map(|e| e.occurred_at).collect::<Vec<i64>>())
            .bind(of_events(&|e| &e.payload))
            .bind(of_deliveries(&|d| &d.id))
            .bind(of_their_events(&|e| &e.tenant_id))
            .bind(of_their_events(&|e| &e.id))
            .bind(of_deliveries(&|d| &d.endpoint_id))
            .bind(of_their_events(&|e| &e.event_type))
            .bind(of_deliveries(&|d| &d.idempotency_token))
            .bind(status::DELIVERING)
            // 0 stands for NULL (see `pg`).
            .bind(
                d.iter()
                    .map(|d| d.locked_until.unwrap_or(0))
                    .collect::<Vec<i64>>(),
            )
            .fetch_one(pool)
            .await
            .map_err(|e| DbErr::Query(RuntimeErr::SqlxError(e)))?;
        Ok(Outcome {
            base,
            version,
            attempts_version,
        })
    }

    /// What became of each event, now that the first has sequence number `base + 1`,
    /// and the deliveries taken over, as stored.
    fn committed(self, base: i64, attempts_version: i64) -> (Vec<Committed>, Option<Taken>) {
        let mut items: Vec<Vec<QueueItem>> = vec![Vec::new(); self.events.len()];
        let mut counts = vec![0u32; self.events.len()];
        let mut taken = Vec::new();
        for d in self.deliveries {
            counts[d.event] += 1;
            let e = &self.events[d.event];
            match d.locked_until {
                Some(locked_until) => taken.push(delivery::Model {
                    idempotency_token: d.idempotency_token,
                    id: d.id,
                    tenant_id: e.tenant_id.clone(),
                    event_id: e.id.clone(),
                    endpoint_id: d.endpoint_id,
                    event_type: e.event_type.clone(),
                    status: status::DELIVERING.into(),
                    attempts: 0,
                    next_attempt_at: Some(self.now),
                    locked_until: Some(locked_until),
                    last_attempt_at: None,
                    last_response_code: None,
                    last_error: None,
                    created_at: self.now,
                    updated_at: self.now,
                }),
                None => items[d.event].push(QueueItem {
                    delivery_id: d.id,
                    endpoint_id: d.endpoint_id,
                }),
            }
        }
        let committed = self
            .events
            .into_iter()
            .zip(items)
            .zip(counts)
            .enumerate()
            .map(|(i, ((mut event, new_deliveries), deliveries))| {
                event.seq = base + 1 + i as i64;
                Committed {
                    event,
                    duplicate: false,
                    deliveries,
                    new_deliveries,
                }
            })
            .collect();
        let taken = (!taken.is_empty()).then_some(Taken {
            deliveries: taken,
            context_version: attempts_version,
        });
        (committed, taken)
    }
}
