//! The due floor (`store::due_floor`): the reconciler's sweeps and refills read the
//! pending deliveries from it, so it must rise past finished deliveries and never past
//! a pending one, held by a worker or not; otherwise a lost delivery would never be
//! found again.

use std::{sync::Arc, time::Duration};

use herald::{
    delivery::reconciler::Reconciler,
    lease::BackgroundLease,
    queue::{Queue, memory::MemoryQueue},
    store::Store,
    time::now_micros,
};
use sea_orm::ConnectionTrait;

use crate::helpers::{fresh_store, store_tenant_with_endpoint};

const SEC: i64 = 1_000_000;

async fn floor_rises_past_finished_and_stops_at_pending(store: &Store) {
    let (tenant, endpoint) =
        store_tenant_with_endpoint(store, "floor", "http://127.0.0.1:9/hook").await;
    assert_eq!(
        store.due_floor().await.unwrap(),
        0,
        "a new database's floor"
    );

    let now = now_micros();
    let base = now - 60 * SEC;
    // (id, status, due, held by a worker until)
    let rows = [
        ("dlv_f1", "DELIVERED", base + SEC, None),
        (
            "dlv_f2",
            "DELIVERING",
            base + 2 * SEC,
            Some(now + 3600 * SEC),
        ),
        ("dlv_f3", "DELIVERED", base + 3 * SEC, None),
        ("dlv_f4", "FAILING", base + 4 * SEC, None),
        ("dlv_f5", "FAILED", base + 5 * SEC, None),
    ];
    let values: Vec<String> = rows
        .iter()
        .map(|(id, status, due, lock)| {
            format!(
                "('{id}', '{t}', 'evt_floor', '{e}', 'license.created', '{id}', '{status}', 1,
                  {due}, {lock}, {now}, {now})",
                t = tenant,
                e = endpoint,
                lock = lock.map_or("NULL".into(), |l| l.to_string()),
            )
        })
        .collect();
    store
        .db
        .execute_unprepared(&format!(
            "INSERT INTO events (seq, id, tenant_id, event_type, environment, occurred_at,
                                 received_at, payload)
             VALUES (1, 'evt_floor', '{t}', 'license.created', '', {now}, {now}, '{{}}');
             INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type,
                                     idempotency_token, status, attempts, next_attempt_at,
                                     locked_until, created_at, updated_at)
             VALUES {values}",
            t = tenant,
            values = values.join(", "),
        ))
        .await
        .expect("rows");

    // Nothing pending before the cutoff: the floor goes to the cutoff.
    let floor = store.raise_due_floor(base + SEC + SEC / 2).await.unwrap();
    assert_eq!(
        floor,
        base + SEC + SEC / 2,
        "past the first finished delivery"
    );
    // The earliest pending delivery stops it, although a worker holds it.
    let floor = store.raise_due_floor(now - 10 * SEC).await.unwrap();
    assert_eq!(floor, base + 2 * SEC, "stopped at the held delivery");
    assert_eq!(store.due_floor().await.unwrap(), floor, "kept");
    // A lower cutoff never lowers it.
    assert_eq!(store.raise_due_floor(base).await.unwrap(), floor);

    // Read from the floor: the pending delivery no worker holds, not the finished ones.
    let waiting = store.earliest_pending(floor, 10).await.unwrap();
    let ids: Vec<&str> = waiting
        .iter()
        .map(|(item, _)| item.delivery_id.as_str())
        .collect();
    assert_eq!(ids, ["dlv_f4"]);
    assert_eq!(waiting[0].1, base + 4 * SEC, "with its due time");
    let overdue = store.take_overdue(floor, now - 10 * SEC, 10).await.unwrap();
    let ids: Vec<&str> = overdue
        .iter()
        .map(|(item, _)| item.delivery_id.as_str())
        .collect();
    assert_eq!(ids, ["dlv_f4"], "the sweep takes it");
    assert_eq!(overdue[0].1, base + 4 * SEC, "with the due time it had");

    // Once the held one finishes, the floor passes it, but not dlv_f4, which the sweep
    // made due again at its own time.
    store
        .db
        .execute_unprepared("UPDATE deliveries SET status = 'DELIVERED' WHERE id = 'dlv_f2'")
        .await
        .unwrap();
    let cutoff = now_micros() + SEC;
    let floor = store.raise_due_floor(cutoff).await.unwrap();
    assert!(
        floor > base + 5 * SEC && floor < cutoff,
        "at dlv_f4's new due time: {floor}"
    );
    let waiting = store.earliest_pending(floor, 10).await.unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].0.delivery_id, "dlv_f4");
}

/// A sweep reads past more overdue deliveries than one batch (1,000), some of them due at
/// the same moment (a publish batch), and enqueues each once; what the limit cut off at
/// that moment comes with the next sweep.
async fn sweeps_take_every_overdue_delivery_once(store: &Store) {
    let (tenant, endpoint) =
        store_tenant_with_endpoint(store, "sweep", "http://127.0.0.1:9/hook").await;
    let now = now_micros();
    let base = now - 600 * SEC;
    store
        .db
        .execute_unprepared(&format!(
            "INSERT INTO events (seq, id, tenant_id, event_type, environment, occurred_at,
                                 received_at, payload)
             VALUES (1, 'evt_sweep', '{tenant}', 'license.created', '', {now}, {now}, '{{}}')"
        ))
        .await
        .expect("event");
    // 1,500 due together, then 1,000 one millisecond apart, a third of those finished.
    let dues = (0..1500)
        .map(|_| base)
        .chain((0..1000).map(|i| base + SEC + i * 1000));
    let rows: Vec<String> = dues
        .enumerate()
        .map(|(i, due)| {
            let status = if i >= 1500 && i % 3 == 2 {
                "DELIVERED"
            } else {
                "DELIVERING"
            };
            format!(
                "('dlv_s{i:05}', '{tenant}', 'evt_sweep', '{endpoint}', 'license.created',
                  'tok{i}', '{status}', 1, {due}, NULL, {now}, {now})"
            )
        })
        .collect();
    for chunk in rows.chunks(250) {
        store
            .db
            .execute_unprepared(&format!(
                "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type,
                                         idempotency_token, status, attempts, next_attempt_at,
                                         locked_until, created_at, updated_at)
                 VALUES {}",
                chunk.join(", ")
            ))
            .await
            .expect("deliveries");
    }
    let pending = rows.iter().filter(|r| r.contains("DELIVERING")).count();
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60)));
    let reconciler = Reconciler {
        store: store.clone(),
        queue: queue.clone(),
        requeue_after: Duration::from_secs(60),
        interval: Duration::from_secs(10),
        queue_starts_empty: false,
        lease: BackgroundLease::local(),
    };
    let first = reconciler.sweep(false).await.expect("sweep");
    assert!(
        first >= 1000 && first < pending,
        "a first sweep: {first} of {pending}"
    );
    let second = reconciler.sweep(false).await.expect("sweep");
    assert_eq!(first + second, pending, "the second sweep takes the rest");
    assert_eq!(
        reconciler.sweep(false).await.expect("sweep"),
        0,
        "and no more"
    );
    let mut popped = std::collections::HashSet::new();
    loop {
        let leases = queue.pop(1000, Duration::ZERO).await.expect("pop");
        if leases.is_empty() {
            break;
        }
        for lease in &leases {
            assert!(
                popped.insert(lease.item.delivery_id.clone()),
                "twice: {lease:?}"
            );
        }
    }
    assert_eq!(
        popped.len(),
        pending,
        "every pending delivery enqueued once"
    );
}

#[tokio::test]
async fn sweeps_on_postgres() {
    let (store, _fresh) = fresh_store(true).await;
    sweeps_take_every_overdue_delivery_once(&store).await;
}

#[tokio::test]
async fn sweeps_on_sqlite() {
    let (store, _fresh) = fresh_store(false).await;
    sweeps_take_every_overdue_delivery_once(&store).await;
}

#[tokio::test]
async fn due_floor_on_postgres() {
    let (store, _fresh) = fresh_store(true).await;
    floor_rises_past_finished_and_stops_at_pending(&store).await;
}

#[tokio::test]
async fn due_floor_on_sqlite() {
    let (store, _fresh) = fresh_store(false).await;
    floor_rises_past_finished_and_stops_at_pending(&store).await;
}
