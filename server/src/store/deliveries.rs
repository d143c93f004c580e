//! Deliveries (the outbox rows) and their attempts: claiming by workers, recording
//! outcomes, the delivery log queries, manual retries, replays and pruning.

use std::{collections::HashMap, sync::Arc};

use sea_orm::{
    ActiveValue::Set,
    Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
    prelude::*,
    sea_query::{LockBehavior, LockType, Query},
};

use super::{
    Store,
    attempt_copy::Loaded,
    entities::{attempt, delivery, endpoint, event, latest_attempt, tenant},
    events::idempotency_token,
    page::Page,
    pg,
};
use crate::{
    delivery::{
        outcome::{Decision, EndpointChange},
        status,
    },
    error::Result,
    filter::Filter,
    ids::{self, Kind},
    queue::QueueItem,
    time::now_micros,
};

/// Everything the attempts of a batch of deliveries need. The endpoints and tenants are
/// shared with the worker's copy of them (PostgreSQL; see `store::attempt_copy`).
#[derive(Default)]
pub struct AttemptContext {
    pub events: HashMap<String, event::Model>,
    pub endpoints: HashMap<String, Arc<endpoint::Model>>,
    pub tenants: HashMap<String, Arc<tenant::Model>>,
}

/// One attempt to record.
pub struct AttemptRecord {
    pub delivery: delivery::Model,
    pub started_at: i64,
    pub duration_micros: i64,
    pub status_code: Option<u16>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub response_body: String,
    pub decision: Decision,
}

/// What recording an attempt did to its delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The decision was applied; retry at this time if any.
    Applied { next_attempt_at: Option<i64> },
    /// The delivery had been finished meanwhile (superseded): no retry.
    Finished,
    /// The delivery no longer exists: nothing was recorded.
    Gone,
}

/// The statuses with an attempt still to come, as an SQL list.
const PENDING_SQL: &str = "'DELIVERING', 'FAILING'";

/// Attempt rows per INSERT (12 values each, under every backend's parameter limit).
const ATTEMPT_INSERT_CHUNK: usize = 500;
/// Delivery updates per statement (7 values each).
const UPDATE_CHUNK: usize = 500;

/// Which deliveries a listing wants.
#[derive(Clone, Debug, Default)]
pub struct DeliveryQuery {
    pub tenant_id: String,
    pub endpoint_id: Option<String>,
    pub event_id: Option<String>,
    pub types: Option<Vec<&'static str>>,
    pub status: Option<&'static str>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
}

impl Store {
    /// Claims the deliveries among `ids` that are pending, due by `due_by` and not held
    /// by another worker, holding them until `lock_until`. Atomic per row: two workers
    /// never both get one.
    async fn claim_deliveries(
        &self,
        ids: Vec<String>,
        due_by: i64,
        lock_until: i64,
    ) -> Result<Vec<delivery::Model>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_micros();
        Ok(delivery::Entity::update_many()
            .col_expr(delivery::Column::LockedUntil, Expr::value(lock_until))
            .filter(delivery::Column::Id.is_in(ids))
            .filter(delivery::Column::Status.is_in(status::PENDING))
            .filter(delivery::Column::NextAttemptAt.lte(due_by))
            .filter(
                Condition::any()
                    .add(delivery::Column::LockedUntil.is_null())
                    .add(delivery::Column::LockedUntil.lt(now)),
            )
            .exec_with_returning(&self.db)
            .await?)
    }

    /// Claims a dispatch's deliveries (see [`Store::claim_deliveries`]): those in
    /// `start_now` until `lock_now`, those that will wait in an endpoint's line until
    /// `lock_line`; then loads what their attempts need. `endpoint_ids` are their
    /// endpoints, as the queue entries name them. On PostgreSQL the claim and the events
    /// are one statement, which also reads the version of the endpoints and tenants: the
    /// worker's copy of them is used when it holds them all at that version (see
    /// `store::attempt_copy`). Otherwise they are read by a second statement, at the same
    /// time on a second connection when the copy lacks one of them.
    pub async fn claim_for_attempts(
        &self,
        start_now: Vec<String>,
        in_line: Vec<String>,
        endpoint_ids: Vec<String>,
        due_by: i64,
        lock_now: i64,
        lock_line: i64,
    ) -> Result<(Vec<delivery::Model>, AttemptContext)> {
        if !pg::is_postgres(&self.db) {
            let mut claimed = self.claim_deliveries(start_now, due_by, lock_now).await?;
            claimed.extend(self.claim_deliveries(in_line, due_by, lock_line).await?);
            let context = self.attempt_context(&claimed).await?;
            return Ok((claimed, context));
        }
        if start_now.is_empty() && in_line.is_empty() {
            return Ok((Vec::new(), AttemptContext::default()));
        }
        // Each id is looked up by primary key (`LATERAL … OFFSET 0` keeps the planner from
        // flattening the lookup into a join it plans itself), and the rows that qualify
        // are updated by their physical address. Given the choice, the planner took an
        // index of pending deliveries and a hash join, or a sequential scan (a prepared
        // statement's generic plan is made once, while the table may still be empty),
        // reading every pending delivery on each claim: 66 buffers per claimed row in a1,
        // against 13 this way, and the healthy endpoint of (d), with the hanging one's
        // backlog pending, at 60-70% of a1's rate.
        //
        // A row another transaction updated after the lookup is not claimed by it:
        // PostgreSQL finds the row's newest version but no longer matches its address.
        // Such rows (found by the lookup, not updated: their claimed columns are NULL in
        // the result) are looked up once more, by a second statement that sees the
        // change, so a row is claimed whenever a plain update would have claimed it.
        //
        // The plan is meant to be generic, made once per connection (see `store::pg`,
        // *Plans*): the arrays are read through scalar subqueries, and the lookup names
        // only the primary key, so the pending index cannot serve it.
        let sql = format!(
            "WITH target AS (
                 SELECT t.tid, c.id, c.lock_until
                 FROM UNNEST((SELECT $1::text[]), (SELECT $2::bigint[])) AS c(id, lock_until),
                      LATERAL (
                          SELECT ctid AS tid, status, next_attempt_at, locked_until
                          FROM deliveries WHERE id = c.id
                          OFFSET 0
                      ) AS t
                 WHERE t.status IN ({PENDING_SQL}) AND t.next_attempt_at <= $3
                   AND (t.locked_until IS NULL OR t.locked_until < $4)
             ),
             claimed AS (
                 UPDATE deliveries AS d SET locked_until = target.lock_until
                 FROM target WHERE d.ctid = target.tid
                 RETURNING d.*
             )
             SELECT claimed.*, e.seq AS e_seq, e.id AS e_id, e.tenant_id AS e_tenant_id,
                    e.event_type AS e_event_type, e.environment AS e_environment,
                    e.occurred_at AS e_occurred_at, e.received_at AS e_received_at,
                    e.payload AS e_payload, e.idempotency_key AS e_idempotency_key,
                    target.id AS target_id, target.lock_until AS target_lock,
                    (SELECT value FROM sequences WHERE name = 'attempts') AS ctx_version
             FROM target LEFT JOIN claimed ON claimed.id = target.id
                  LEFT JOIN events e ON e.id = claimed.event_id"
        );
        let mut wanted: Vec<(String, i64)> = start_now
            .into_iter()
            .map(|id| (id, lock_now))
            .chain(in_line.into_iter().map(|id| (id, lock_line)))
            .collect();
        // Rows are locked in the order of the list: in one order for every statement that
        // updates several (claims and records; the reconciler's sweep skips locked rows),
        // two that share rows wait for each other instead of deadlocking. A row can be in two
        // claims at once: a queue entry for it is parked while a refill schedules it again,
        // and the sweep takes a row that waited unclaimed long past its due time.
        wanted.sort_unstable();
        let run = |wanted: Vec<(String, i64)>| {
            let (ids, locks): (Vec<String>, Vec<i64>) = wanted.into_iter().unzip();
            let values = vec![
                pg::texts(ids),
                pg::bigints(locks),
                due_by.into(),
                now_micros().into(),
            ];
            self.db.query_all(pg::stmt(&sql, values))
        };
        let copied = self.attempt_copy().holds(&endpoint_ids);
        let (rows, read) = if copied {
            (run(wanted).await?, None)
        } else {
            // Read beside the claim, not after it: one round trip less on the way to the
            // first request. An endpoint changed meanwhile is seen as it was an instant
            // earlier, as when the change lands just after the read.
            let (rows, read) = tokio::try_join!(
                async { Ok(run(wanted).await?) },
                Loaded::read(&self.db, endpoint_ids.clone()),
            )?;
            (rows, Some(read))
        };
        let claim_version = match rows.first() {
            Some(row) => row.try_get::<Option<i64>>("", "ctx_version")?,
            None => None,
        };
        let mut claimed = Vec::with_capacity(rows.len());
        let mut context = AttemptContext::default();
        let missed = take_claimed(rows, &mut claimed, &mut context)?;
        if !missed.is_empty() {
            // Changed again under the second lookup: left to its queue entry's next turn.
            let rows = run(missed).await?;
            take_claimed(rows, &mut claimed, &mut context)?;
        }
        if claimed.is_empty() {
            return Ok((claimed, context));
        }
        let loaded = match read {
            // Read beside the claim: the copy takes it in.
            Some(read) => {
                self.attempt_copy().absorb(&read);
                read
            }
            None => self.attempt_endpoints(claim_version, endpoint_ids).await?,
        };
        context.endpoints = loaded.endpoints;
        context.tenants = loaded.tenants;
        Ok((claimed, context))
    }

    /// The endpoints `endpoint_ids` and their tenants as attempts read them, at
    /// `version` of `sequences.attempts` or later: the worker's copy when it is at that
    /// version, else a fresh read (also when `version` is unknown), which the copy takes
    /// in. For a claim, at the version its statement saw, and for the deliveries a
    /// publish handed to the worker, at the version the publish saw (PostgreSQL).
    pub async fn attempt_endpoints(
        &self,
        version: Option<i64>,
        endpoint_ids: Vec<String>,
    ) -> Result<Loaded> {
        if let Some(copy) = version.and_then(|v| self.attempt_copy().get(v, &endpoint_ids)) {
            return Ok(copy);
        }
        let read = Loaded::read(&self.db, endpoint_ids).await?;
        self.attempt_copy().absorb(&read);
        Ok(read)
    }

    /// Loads the events, endpoints and tenants of `deliveries` (SQLite's path).
    async fn attempt_context(&self, deliveries: &[delivery::Model]) -> Result<AttemptContext> {
        let ids = |of: fn(&delivery::Model) -> &String| {
            let mut ids: Vec<String> = deliveries.iter().map(|d| of(d).clone()).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let events = event::Entity::find()
            .filter(event::Column::Id.is_in(ids(|d| &d.event_id)))
            .all(&self.db)
            .await?;
        let endpoints = endpoint::Entity::find()
            .filter(endpoint::Column::Id.is_in(ids(|d| &d.endpoint_id)))
            .all(&self.db)
            .await?;
        let tenants = tenant::Entity::find()
            .filter(tenant::Column::Id.is_in(ids(|d| &d.tenant_id)))
            .all(&self.db)
            .await?;
        Ok(AttemptContext {
            events: events.into_iter().map(|e| (e.id.clone(), e)).collect(),
            endpoints: endpoints
                .into_iter()
                .map(|e| (e.id.clone(), Arc::new(e)))
                .collect(),
            tenants: tenants
                .into_iter()
                .map(|t| (t.id.clone(), Arc::new(t)))
                .collect(),
        })
    }

    /// Records a batch of attempts and applies each decision to its delivery and
    /// endpoint. Returns, per record and in order, what became of its delivery. Each
    /// attempt row is written together with its delivery's update, never without it.
    ///
    /// The endpoint changes come first, then the deliveries' updates, which lock their
    /// rows: a delivery deleted meanwhile is reported [`Recorded::Gone`] and gets no
    /// attempt row, and one being deleted concurrently waits for this commit (its
    /// attempts then go with it).
    pub async fn record_attempts(&self, records: &[AttemptRecord]) -> Result<Vec<Recorded>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_micros();
        // In the order claims lock rows (see `claim_for_attempts`).
        let mut all: Vec<&AttemptRecord> = records.iter().collect();
        all.sort_unstable_by(|a, b| a.delivery.id.cmp(&b.delivery.id));
        let quiet = records
            .iter()
            .all(|r| matches!(r.decision.endpoint, EndpointChange::None));
        if !(quiet && pg::is_postgres(&self.db)) {
            return self.record_in_transaction(&all, now).await;
        }
        // The usual batch (no endpoint to change) is one statement: the deliveries'
        // updates and their attempts together, in the statement's own transaction, one
        // round trip instead of four (begin, update, insert, commit). What it cannot
        // apply (a delivery finished, deleted or changed meanwhile) goes through the
        // general path, which sorts those cases out.
        let applied = record_applied_pg(&self.db, &all, now).await?;
        let rest: Vec<&AttemptRecord> = records
            .iter()
            .filter(|r| !applied.contains(r.delivery.id.as_str()))
            .collect();
        let mut rest_outcome = if rest.is_empty() {
            Vec::new()
        } else {
            self.record_in_transaction(&rest, now).await?
        }
        .into_iter();
        Ok(records
            .iter()
            .map(|r| {
                if applied.contains(r.delivery.id.as_str()) {
                    Recorded::Applied {
                        next_attempt_at: r.decision.next_attempt_at,
                    }
                } else {
                    rest_outcome.next().unwrap_or(Recorded::Gone)
                }
            })
            .collect())
    }

    /// Records `records` in one transaction (one commit for the whole batch), endpoint
    /// changes included (see [`Store::record_attempts`]).
    async fn record_in_transaction(
        &self,
        records: &[&AttemptRecord],
        now: i64,
    ) -> Result<Vec<Recorded>> {
        let txn = self.db.begin().await?;
        // Endpoints before deliveries: the order in which deleting an endpoint (which
        // cascades to its deliveries) takes its locks; the other order can deadlock
        // with it. A change for an endpoint deleted meanwhile updates nothing.
        let mut changes: Vec<(&str, &EndpointChange)> = records
            .iter()
            .map(|r| (r.delivery.endpoint_id.as_str(), &r.decision.endpoint))
            .filter(|(_, change)| !matches!(change, EndpointChange::None))
            .collect();
        changes.sort_by_key(|(endpoint, _)| *endpoint);
        for (endpoint, change) in changes {
            apply_endpoint_change(&txn, endpoint, change, now).await?;
        }
        // On PostgreSQL the applied records' attempts are inserted by the same statement.
        let postgres = pg::is_postgres(&txn);
        let applied = if postgres {
            record_applied_pg(&txn, records, now).await?
        } else {
            update_pending(&txn, records, now).await?
        };
        if postgres {
            // What follows logs the attempt in `attempts` and overwrites the row's last
            // attempt time and code: the attempt the row kept goes to `attempts` first.
            let finished: Vec<&str> = records
                .iter()
                .map(|r| r.delivery.id.as_str())
                .filter(|id| !applied.contains(*id))
                .collect();
            move_latest_attempts_pg(&txn, &finished).await?;
        }
        let mut outcome = Vec::with_capacity(records.len());
        for &r in records {
            let d = &r.delivery;
            if applied.contains(d.id.as_str()) {
                outcome.push(Recorded::Applied {
                    next_attempt_at: r.decision.next_attempt_at,
                });
                continue;
            }
            // Finished while the attempt was in flight (superseded by a manual retry): it
            // stays finished, so it is not brought back and retried; the attempt is still
            // counted and logged.
            let exists = delivery::Entity::update_many()
                .col_expr(delivery::Column::Attempts, Expr::value(d.attempts + 1))
                .col_expr(
                    delivery::Column::LockedUntil,
                    Expr::value(Option::<i64>::None),
                )
                .col_expr(delivery::Column::LastAttemptAt, Expr::value(r.started_at))
                .col_expr(
                    delivery::Column::LastResponseCode,
                    Expr::value(r.status_code.map(i32::from)),
                )
                .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
                .filter(delivery::Column::Id.eq(d.id.clone()))
                .exec(&txn)
                .await?
                .rows_affected
                > 0;
            outcome.push(if exists {
                Recorded::Finished
            } else {
                Recorded::Gone
            });
        }
        let rows: Vec<attempt::Model> = records
            .iter()
            .zip(&outcome)
            .filter(|(_, o)| match o {
                Recorded::Applied { .. } => !postgres,
                Recorded::Finished => true,
                Recorded::Gone => false,
            })
            .map(|(r, _)| attempt_row(r))
            .collect();
        if postgres {
            insert_attempts_pg(&txn, rows).await?;
        } else {
            for chunk in rows.chunks(ATTEMPT_INSERT_CHUNK) {
                attempt::Entity::insert_many(chunk.iter().cloned().map(attempt::ActiveModel::from))
                    .exec_without_returning(&txn)
                    .await?;
            }
        }
        txn.commit().await?;
        Ok(outcome)
    }

    /// Ends a delivery without an attempt (its endpoint is disabled, or its event gone).
    pub async fn fail_without_attempt(&self, delivery_id: &str, reason: &str) -> Result<()> {
        delivery::Entity::update_many()
            .col_expr(delivery::Column::Status, Expr::value(status::FAILED))
            .col_expr(
                delivery::Column::NextAttemptAt,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(
                delivery::Column::LockedUntil,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(delivery::Column::LastError, Expr::value(reason))
            .col_expr(delivery::Column::UpdatedAt, Expr::value(now_micros()))
            .filter(delivery::Column::Id.eq(delivery_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The `limit` pending deliveries not held by a worker that are due first, with
    /// their due time (Unix microseconds), looking from `floor` (`Store::due_floor`).
    /// Changes nothing: the queue's refill after a spill (`Queue::refill_room`) re-reads
    /// the same rows until they are attempted.
    pub async fn earliest_pending(&self, floor: i64, limit: u64) -> Result<Vec<(QueueItem, i64)>> {
        let now = now_micros();
        let rows: Vec<(String, String, Option<i64>)> = waiting(floor, now, limit)
            .column(delivery::Column::NextAttemptAt)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(delivery_id, endpoint_id, due)| {
                (
                    QueueItem {
                        delivery_id,
                        endpoint_id,
                    },
                    due.unwrap_or(now),
                )
            })
            .collect())
    }

    /// Pending deliveries due from `floor` to `cutoff` and not held by a worker, oldest
    /// first, with the due time they had; that is moved to `now` so the next sweep does
    /// not take them again before they are overdue once more.
    pub async fn take_overdue(
        &self,
        floor: i64,
        cutoff: i64,
        limit: u64,
    ) -> Result<Vec<(QueueItem, i64)>> {
        let now = now_micros();
        let rows: Vec<(String, String, Option<i64>)> = waiting(floor, now, limit)
            .column(delivery::Column::NextAttemptAt)
            .filter(delivery::Column::NextAttemptAt.lte(cutoff))
            .into_tuple()
            .all(&self.db)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut still_pending = delivery::Entity::find()
            .select_only()
            .column(delivery::Column::Id)
            .filter(delivery::Column::Id.is_in(rows.iter().map(|(id, _, _)| id.clone())))
            .filter(delivery::Column::Status.is_in(status::PENDING));
        if pg::is_postgres(&self.db) {
            // A row a claim or a record holds is being attempted: it is left alone rather
            // than waited for. Waiting, with rows locked in another order than the
            // claim's, deadlocked now and then against a claim of the same rows (retries
            // that waited unclaimed beside a full line, long past their due time).
            still_pending =
                still_pending.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        delivery::Entity::update_many()
            .col_expr(delivery::Column::NextAttemptAt, Expr::value(now))
            .filter(
                delivery::Column::Id.in_subquery(sea_orm::QueryTrait::into_query(still_pending)),
            )
            .exec(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(delivery_id, endpoint_id, due)| {
                let item = QueueItem {
                    delivery_id,
                    endpoint_id,
                };
                (item, due.unwrap_or(cutoff))
            })
            .collect())
    }

    pub async fn get_delivery(&self, tenant_id: &str, id: &str) -> Result<Option<delivery::Model>> {
        Ok(delivery::Entity::find_by_id(id)
            .filter(delivery::Column::TenantId.eq(tenant_id))
            .one(&self.db)
            .await?)
    }

    /// A page of deliveries, newest first.
    pub async fn list_deliveries(
        &self,
        q: &DeliveryQuery,
        page: &Page,
    ) -> Result<(Vec<delivery::Model>, String)> {
        let mut select = delivery::Entity::find()
            .filter(delivery::Column::TenantId.eq(q.tenant_id.clone()))
            .order_by_desc(delivery::Column::Id);
        if let Some(ep) = &q.endpoint_id {
            select = select.filter(delivery::Column::EndpointId.eq(ep.clone()));
        }
        if let Some(ev) = &q.event_id {
            select = select.filter(delivery::Column::EventId.eq(ev.clone()));
        }
        if let Some(types) = &q.types {
            select = select.filter(delivery::Column::EventType.is_in(types.iter().copied()));
        }
        if let Some(st) = q.status {
            select = select.filter(delivery::Column::Status.eq(st));
        }
        if let Some(t) = q.created_after {
            select = select.filter(delivery::Column::CreatedAt.gte(t));
        }
        if let Some(t) = q.created_before {
            select = select.filter(delivery::Column::CreatedAt.lt(t));
        }
        if let Some(after) = &page.after {
            select = select.filter(delivery::Column::Id.lt(after.clone()));
        }
        let rows = select.limit(page.size + 1).all(&self.db).await?;
        Ok(page.finish(rows, |d| d.id.clone()))
    }

    /// A page of a delivery's attempts, first attempt first: those in `attempts`, then
    /// the latest one if its row keeps it (migration 9), which comes after them all.
    pub async fn list_attempts(
        &self,
        tenant_id: &str,
        delivery_id: &str,
        page: &Page,
    ) -> Result<(Vec<attempt::Model>, String)> {
        let after = page.after_i64()?;
        let mut select = attempt::Entity::find()
            .filter(attempt::Column::TenantId.eq(tenant_id))
            .filter(attempt::Column::DeliveryId.eq(delivery_id))
            .order_by_asc(attempt::Column::Attempt);
        if let Some(after) = after {
            select = select.filter(attempt::Column::Attempt.gt(after));
        }
        let mut rows = select.limit(page.size + 1).all(&self.db).await?;
        if rows.len() as u64 <= page.size {
            let latest = latest_attempt::Entity::find_by_id(delivery_id)
                .filter(latest_attempt::Column::TenantId.eq(tenant_id))
                .one(&self.db)
                .await?
                .and_then(latest_attempt::Model::attempt)
                .filter(|a| after.is_none_or(|after| i64::from(a.attempt) > after));
            rows.extend(latest);
        }
        Ok(page.finish(rows, |a| a.attempt.to_string()))
    }

    pub async fn delete_delivery(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let res = delivery::Entity::delete_many()
            .filter(delivery::Column::Id.eq(id))
            .filter(delivery::Column::TenantId.eq(tenant_id))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected > 0)
    }

    /// A manual retry: a new delivery of the same event to the same endpoint, due now,
    /// with the same idempotency token. A still-pending original is superseded (failed)
    /// so the receiver does not get both.
    pub async fn retry_delivery(&self, original: &delivery::Model) -> Result<delivery::Model> {
        let now = now_micros();
        let txn = self.db.begin().await?;
        let new_id = ids::new(Kind::Delivery);
        if status::PENDING.contains(&original.status.as_str()) {
            delivery::Entity::update_many()
                .col_expr(delivery::Column::Status, Expr::value(status::FAILED))
                .col_expr(
                    delivery::Column::NextAttemptAt,
                    Expr::value(Option::<i64>::None),
                )
                .col_expr(
                    delivery::Column::LastError,
                    Expr::value(format!("superseded by manual retry {new_id}")),
                )
                .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
                .filter(delivery::Column::Id.eq(original.id.clone()))
                .exec(&txn)
                .await?;
        }
        let model = new_delivery(
            new_id,
            &original.tenant_id,
            &original.event_id,
            &original.endpoint_id,
            &original.event_type,
            now,
        );
        let model = delivery::Entity::insert(model)
            .exec_with_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(model)
    }

    /// New deliveries to `endpoint` of the tenant's events received in `[since, until)`
    /// that its filters and environment match, at most `limit`, oldest first.
    pub async fn replay(
        &self,
        endpoint: &endpoint::Model,
        filter: &Filter,
        since: i64,
        until: i64,
        limit: u64,
    ) -> Result<Vec<QueueItem>> {
        let mut select = event::Entity::find()
            .select_only()
            .column(event::Column::Id)
            .column(event::Column::EventType)
            .filter(event::Column::TenantId.eq(endpoint.tenant_id.clone()))
            .filter(event::Column::Environment.eq(endpoint.environment.clone()))
            .filter(event::Column::ReceivedAt.gte(since))
            .filter(event::Column::ReceivedAt.lt(until))
            .order_by_asc(event::Column::Seq)
            .limit(limit);
        if let Some(types) = filter.names() {
            select = select.filter(event::Column::EventType.is_in(types));
        }
        let events: Vec<(String, String)> = select.into_tuple().all(&self.db).await?;
        let now = now_micros();
        let rows: Vec<delivery::ActiveModel> = events
            .iter()
            .map(|(event_id, event_type)| {
                new_delivery(
                    ids::new(Kind::Delivery),
                    &endpoint.tenant_id,
                    event_id,
                    &endpoint.id,
                    event_type,
                    now,
                )
            })
            .collect();
        let items = rows
            .iter()
            .map(|r| QueueItem {
                delivery_id: r.id.clone().unwrap(),
                endpoint_id: endpoint.id.clone(),
            })
            .collect();
        let txn = self.db.begin().await?;
        for chunk in rows.chunks(500) {
            delivery::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(items)
    }

    /// Deletes up to `batch` events received before `before` (their deliveries and
    /// attempts go with them). Returns how many were deleted.
    pub async fn prune_events(&self, before: i64, batch: u64) -> Result<u64> {
        let oldest = Query::select()
            .column(event::Column::Seq)
            .from(event::Entity)
            .and_where(event::Column::ReceivedAt.lt(before))
            .order_by(event::Column::Seq, sea_orm::Order::Asc)
            .limit(batch)
            .to_owned();
        let res = event::Entity::delete_many()
            .filter(event::Column::Seq.in_subquery(oldest))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected)
    }
}

/// Id and endpoint of the first `limit` pending deliveries due from `floor`, by due time,
/// that no worker holds at `now`: what the queue should have. `deliveries_due` holds
/// finished deliveries too; the floor skips those due before it (see `store::due_floor`).
fn waiting(floor: i64, now: i64, limit: u64) -> sea_orm::Select<delivery::Entity> {
    delivery::Entity::find()
        .select_only()
        .column(delivery::Column::Id)
        .column(delivery::Column::EndpointId)
        .filter(delivery::Column::NextAttemptAt.gte(floor))
        .filter(delivery::Column::Status.is_in(status::PENDING))
        .filter(
            Condition::any()
                .add(delivery::Column::LockedUntil.is_null())
                .add(delivery::Column::LockedUntil.lt(now)),
        )
        .order_by_asc(delivery::Column::NextAttemptAt)
        .limit(limit)
}

/// Reads a claim's result rows into `claimed` and `context`; returns the rows the lookup
/// found but the update did not take (another transaction changed them meanwhile), with
/// their locks, to claim again.
fn take_claimed(
    rows: Vec<sea_orm::QueryResult>,
    claimed: &mut Vec<delivery::Model>,
    context: &mut AttemptContext,
) -> Result<Vec<(String, i64)>> {
    let mut missed = Vec::new();
    for row in rows {
        if row.try_get::<Option<String>>("", "id")?.is_none() {
            missed.push((
                row.try_get::<String>("", "target_id")?,
                row.try_get::<i64>("", "target_lock")?,
            ));
            continue;
        }
        let delivery = <delivery::Model as sea_orm::FromQueryResult>::from_query_result(&row, "")?;
        // No event: pruned between the delivery's queueing and now (LEFT JOIN).
        if row.try_get::<Option<String>>("", "e_id")?.is_some() {
            let event = <event::Model as sea_orm::FromQueryResult>::from_query_result(&row, "e_")?;
            context.events.insert(event.id.clone(), event);
        }
        claimed.push(delivery);
    }
    Ok(missed)
}

impl From<&delivery::Model> for QueueItem {
    fn from(d: &delivery::Model) -> QueueItem {
        QueueItem {
            delivery_id: d.id.clone(),
            endpoint_id: d.endpoint_id.clone(),
        }
    }
}

/// A fresh `DELIVERING` row, due now.
pub fn new_delivery(
    id: String,
    tenant_id: &str,
    event_id: &str,
    endpoint_id: &str,
    event_type: &str,
    now: i64,
) -> delivery::ActiveModel {
    delivery::ActiveModel {
        id: Set(id),
        tenant_id: Set(tenant_id.to_string()),
        event_id: Set(event_id.to_string()),
        endpoint_id: Set(endpoint_id.to_string()),
        event_type: Set(event_type.to_string()),
        idempotency_token: Set(idempotency_token(event_id, endpoint_id)),
        status: Set(status::DELIVERING.into()),
        attempts: Set(0),
        next_attempt_at: Set(Some(now)),
        locked_until: Set(None),
        last_attempt_at: Set(None),
        last_response_code: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

fn attempt_row(r: &AttemptRecord) -> attempt::Model {
    let d = &r.delivery;
    attempt::Model {
        id: ids::new(Kind::Attempt),
        delivery_id: d.id.clone(),
        tenant_id: d.tenant_id.clone(),
        endpoint_id: d.endpoint_id.clone(),
        attempt: d.attempts + 1,
        started_at: r.started_at,
        duration_micros: r.duration_micros,
        status_code: r.status_code.map(i32::from),
        succeeded: r.decision.status == status::DELIVERED,
        error_kind: r.error_kind.clone(),
        error_message: r.error_message.clone(),
        response_body: r.response_body.clone(),
    }
}

/// Applies each record's decision to its delivery if that is still pending, with one
/// statement per chunk (`UPDATE … FROM` a list of values; SQLite, PostgreSQL takes
/// `record_applied_pg`). Returns the ids it updated.
async fn update_pending<C: ConnectionTrait>(
    conn: &C,
    records: &[&AttemptRecord],
    now: i64,
) -> Result<std::collections::HashSet<String>> {
    let mut applied = std::collections::HashSet::new();
    for chunk in records.chunks(UPDATE_CHUNK) {
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 7 + 1);
        let mut rows = Vec::with_capacity(chunk.len());
        // `?` placeholders: SQLite's.
        let param = |values: &mut Vec<sea_orm::Value>, v: sea_orm::Value| {
            values.push(v);
            "?"
        };
        for r in chunk {
            let d = &r.delivery;
            let cols = [
                param(&mut values, d.id.clone().into()),
                param(&mut values, r.decision.status.to_string().into()),
                param(&mut values, (d.attempts + 1).into()),
                param(&mut values, r.decision.next_attempt_at.into()),
                param(&mut values, r.started_at.into()),
                param(&mut values, r.status_code.map(i32::from).into()),
                param(&mut values, r.decision.last_error.clone().into()),
            ];
            rows.push(format!("({})", cols.join(", ")));
        }
        let now_param = param(&mut values, now.into());
        let sql = format!(
            "WITH v(id, status, attempts, next_attempt_at, last_attempt_at, last_response_code, last_error) \
             AS (VALUES {rows}) \
             UPDATE deliveries SET status = v.status, attempts = v.attempts, \
             next_attempt_at = COALESCE(v.next_attempt_at, deliveries.next_attempt_at), \
             locked_until = NULL, \
             last_attempt_at = v.last_attempt_at, last_response_code = v.last_response_code, \
             last_error = v.last_error, updated_at = {now_param} \
             FROM v WHERE deliveries.id = v.id AND deliveries.status IN ({PENDING_SQL}) \
             RETURNING deliveries.id",
            rows = rows.join(", "),
        );
        let stmt =
            sea_orm::Statement::from_sql_and_values(conn.get_database_backend(), sql, values);
        for row in conn.query_all(stmt).await? {
            applied.insert(row.try_get::<String>("", "id")?);
        }
    }
    Ok(applied)
}

/// Applies each record's decision to its delivery if that is still pending, in one
/// statement (PostgreSQL; in the caller's transaction, or its own). Returns the ids it
/// updated; the others got nothing.
///
/// The attempt goes onto the delivery's row (migration 9), in the update: a HOT update
/// instead of an insert into `attempts` with its two indexes and reference trigger. The
/// attempt the row kept before, read by the same lookup as the row's address, moves to
/// `attempts`, so a delivery attempted once writes no `attempts` row at all.
///
/// By primary key, then by address, as the claim (see `claim_for_attempts`), and for the
/// same reason: the planner's own join read every pending delivery; and with a plan made
/// once per connection, as the claim's (see `store::pg`, *Plans*). A record whose row
/// the lookup found but the update did not take (another transaction changed it
/// meanwhile) is applied by a second statement, which sees the change; after that it
/// counts as finished meanwhile.
async fn record_applied_pg<C: ConnectionTrait>(
    conn: &C,
    records: &[&AttemptRecord],
    now: i64,
) -> Result<std::collections::HashSet<String>> {
    let sql = format!(
        "WITH v AS (
             SELECT t.*, v.*
             FROM UNNEST((SELECT $1::text[]), (SELECT $2::text[]), (SELECT $3::int[]),
                         (SELECT $4::bigint[]), (SELECT $5::bigint[]), (SELECT $6::int[]),
                         (SELECT $7::text[]), (SELECT $8::text[]), (SELECT $9::text[]),
                         (SELECT $10::text[]), (SELECT $11::bigint[]), (SELECT $12::bool[]),
                         (SELECT $13::text[]), (SELECT $14::text[]), (SELECT $15::text[]))
                  AS v(id, status, attempts, next_attempt_at, last_attempt_at,
                       last_response_code, last_error, attempt_id, tenant_id, endpoint_id,
                       duration_micros, succeeded, error_kind, error_message, response_body),
                  LATERAL (
                      SELECT ctid AS tid, status AS current, last_attempt_id AS prev_id,
                             attempts AS prev_number, last_attempt_at AS prev_at,
                             last_duration_micros AS prev_duration,
                             last_response_code AS prev_code, last_succeeded AS prev_succeeded,
                             last_error_kind AS prev_error_kind,
                             last_error_message AS prev_error_message,
                             last_response_body AS prev_body
                      FROM deliveries WHERE id = v.id
                      OFFSET 0
                  ) AS t
             WHERE t.current IN ({PENDING_SQL})
         ),
         u AS (
             UPDATE deliveries AS d SET status = v.status, attempts = v.attempts,
                 next_attempt_at = COALESCE(NULLIF(v.next_attempt_at, 0), d.next_attempt_at),
                 locked_until = NULL,
                 last_attempt_at = v.last_attempt_at,
                 last_response_code = NULLIF(v.last_response_code, 0),
                 last_error = NULLIF(v.last_error, ''), updated_at = $16,
                 last_attempt_id = v.attempt_id, last_duration_micros = v.duration_micros,
                 last_succeeded = v.succeeded, last_error_kind = NULLIF(v.error_kind, ''),
                 last_error_message = NULLIF(v.error_message, ''),
                 last_response_body = NULLIF(v.response_body, '')
             FROM v WHERE d.ctid = v.tid
             RETURNING d.id
         ),
         a AS (
             INSERT INTO attempts (id, delivery_id, tenant_id, endpoint_id, attempt,
                 started_at, duration_micros, status_code, succeeded, error_kind,
                 error_message, response_body)
             SELECT v.prev_id, v.id, v.tenant_id, v.endpoint_id, v.prev_number,
                    COALESCE(v.prev_at, 0), COALESCE(v.prev_duration, 0), v.prev_code,
                    COALESCE(v.prev_succeeded, false), v.prev_error_kind,
                    v.prev_error_message, COALESCE(v.prev_body, '')
             FROM v JOIN u ON u.id = v.id
             WHERE v.prev_id IS NOT NULL
         )
         SELECT v.id, u.id IS NOT NULL AS applied FROM v LEFT JOIN u ON u.id = v.id"
    );
    let values = |records: &[&AttemptRecord]| {
        vec![
            pg::texts(records.iter().map(|r| r.delivery.id.clone())),
            pg::texts(records.iter().map(|r| r.decision.status.to_string())),
            pg::ints(records.iter().map(|r| r.delivery.attempts + 1)),
            pg::opt_bigints(records.iter().map(|r| r.decision.next_attempt_at)),
            pg::bigints(records.iter().map(|r| r.started_at)),
            pg::opt_ints(records.iter().map(|r| r.status_code.map(i32::from))),
            pg::opt_texts(records.iter().map(|r| r.decision.last_error.clone())),
            pg::texts(records.iter().map(|_| ids::new(Kind::Attempt))),
            pg::texts(records.iter().map(|r| r.delivery.tenant_id.clone())),
            pg::texts(records.iter().map(|r| r.delivery.endpoint_id.clone())),
            pg::bigints(records.iter().map(|r| r.duration_micros)),
            pg::bools(
                records
                    .iter()
                    .map(|r| r.decision.status == status::DELIVERED),
            ),
            pg::opt_texts(records.iter().map(|r| r.error_kind.clone())),
            pg::opt_texts(records.iter().map(|r| r.error_message.clone())),
            pg::texts(records.iter().map(|r| r.response_body.clone())),
            now.into(),
        ]
    };
    let mut applied = std::collections::HashSet::new();
    let mut todo: Vec<&AttemptRecord> = records.to_vec();
    for _ in 0..2 {
        let mut again = std::collections::HashSet::new();
        for row in conn.query_all(pg::stmt(&sql, values(&todo))).await? {
            let id = row.try_get::<String>("", "id")?;
            if row.try_get::<bool>("", "applied")? {
                applied.insert(id);
            } else {
                again.insert(id);
            }
        }
        todo.retain(|r| again.contains(&r.delivery.id));
        if todo.is_empty() {
            break;
        }
    }
    Ok(applied)
}

/// Moves the latest attempt that each of the deliveries `ids` keeps on its row
/// (migration 9) to `attempts`, locking those rows, in one statement (PostgreSQL).
async fn move_latest_attempts_pg<C: ConnectionTrait>(conn: &C, ids: &[&str]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    const SQL: &str = "WITH o AS (
            SELECT id, tenant_id, endpoint_id, attempts, last_attempt_id, last_attempt_at,
                   last_duration_micros, last_response_code, last_succeeded, last_error_kind,
                   last_error_message, last_response_body
            FROM deliveries WHERE id = ANY($1::text[]) AND last_attempt_id IS NOT NULL
            FOR UPDATE
        ),
        c AS (
            UPDATE deliveries AS d SET last_attempt_id = NULL, last_duration_micros = NULL,
                last_succeeded = NULL, last_error_kind = NULL, last_error_message = NULL,
                last_response_body = NULL
            FROM o WHERE d.id = o.id
        )
        INSERT INTO attempts (id, delivery_id, tenant_id, endpoint_id, attempt, started_at,
            duration_micros, status_code, succeeded, error_kind, error_message, response_body)
        SELECT last_attempt_id, id, tenant_id, endpoint_id, attempts,
               COALESCE(last_attempt_at, 0), COALESCE(last_duration_micros, 0),
               last_response_code, COALESCE(last_succeeded, false), last_error_kind,
               last_error_message, COALESCE(last_response_body, '')
        FROM o";
    let values = vec![pg::texts(ids.iter().map(|&id| String::from(id)))];
    conn.execute(pg::stmt(SQL, values)).await?;
    Ok(())
}

/// The attempts in one statement of fixed text (see `store::pg`).
async fn insert_attempts_pg<C: ConnectionTrait>(conn: &C, rows: Vec<attempt::Model>) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    const SQL: &str = "INSERT INTO attempts (id, delivery_id, tenant_id, endpoint_id, attempt,
            started_at, duration_micros, status_code, succeeded, error_kind, error_message,
            response_body)
        SELECT id, delivery_id, tenant_id, endpoint_id, attempt, started_at, duration_micros,
               NULLIF(status_code, 0), succeeded, NULLIF(error_kind, ''),
               NULLIF(error_message, ''), response_body
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[],
                    $7::bigint[], $8::int[], $9::bool[], $10::text[], $11::text[], $12::text[])
             AS a(id, delivery_id, tenant_id, endpoint_id, attempt, started_at, duration_micros,
                  status_code, succeeded, error_kind, error_message, response_body)";
    let values = vec![
        pg::texts(rows.iter().map(|r| r.id.clone())),
        pg::texts(rows.iter().map(|r| r.delivery_id.clone())),
        pg::texts(rows.iter().map(|r| r.tenant_id.clone())),
        pg::texts(rows.iter().map(|r| r.endpoint_id.clone())),
        pg::ints(rows.iter().map(|r| r.attempt)),
        pg::bigints(rows.iter().map(|r| r.started_at)),
        pg::bigints(rows.iter().map(|r| r.duration_micros)),
        pg::opt_ints(rows.iter().map(|r| r.status_code)),
        pg::bools(rows.iter().map(|r| r.succeeded)),
        pg::opt_texts(rows.iter().map(|r| r.error_kind.clone())),
        pg::opt_texts(rows.iter().map(|r| r.error_message.clone())),
        pg::texts(rows.iter().map(|r| r.response_body.clone())),
    ];
    conn.execute(pg::stmt(SQL, values)).await?;
    Ok(())
}

async fn apply_endpoint_change<C: ConnectionTrait>(
    conn: &C,
    endpoint_id: &str,
    change: &EndpointChange,
    now: i64,
) -> Result<()> {
    let update = endpoint::Entity::update_many().filter(endpoint::Column::Id.eq(endpoint_id));
    let update = match change {
        EndpointChange::None => return Ok(()),
        EndpointChange::ClearFailing => update.col_expr(
            endpoint::Column::FailingSince,
            Expr::value(Option::<i64>::None),
        ),
        EndpointChange::StartFailing(since) => update
            .col_expr(endpoint::Column::FailingSince, Expr::value(*since))
            .filter(endpoint::Column::FailingSince.is_null()),
        EndpointChange::Disable(reason) => update
            .col_expr(endpoint::Column::Enabled, Expr::value(false))
            .col_expr(
                endpoint::Column::DisabledReason,
                Expr::value(reason.clone()),
            )
            .col_expr(endpoint::Column::UpdatedAt, Expr::value(now))
            .filter(endpoint::Column::Enabled.eq(true)),
    };
    update.exec(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_sql_lists_the_pending_statuses() {
        let listed: Vec<String> = status::PENDING.iter().map(|s| format!("'{s}'")).collect();
        assert_eq!(PENDING_SQL, listed.join(", "));
    }
}
