//! The attempt log through the store: every attempt of a delivery is listed once, in
//! order, with what was recorded, wherever it is kept. On PostgreSQL a delivery's latest
//! attempt stays on its row and the earlier ones in `attempts` (migration 9), so this
//! also checks that split: a record moves the row's attempt to `attempts` and keeps the
//! new one, and an attempt recorded after its delivery was finished (superseded by a
//! manual retry) moves it too.

use herald::{
    delivery::outcome::{Decision, EndpointChange},
    delivery::status,
    store::{
        Store,
        deliveries::{AttemptRecord, Recorded},
        entities::{attempt, delivery},
        page::Page,
    },
    time::now_micros,
};
use sea_orm::ConnectionTrait;

use crate::helpers::{fresh_store, insert_pending_delivery, store_tenant_with_endpoint};

const HOUR: i64 = 3_600_000_000;

/// Records attempt `d.attempts + 1` of `d`, answered `code` with `body`.
async fn record(store: &Store, d: &delivery::Model, code: u16, body: &str) -> Recorded {
    let succeeded = (200..300).contains(&code);
    let record = AttemptRecord {
        delivery: d.clone(),
        started_at: now_micros(),
        duration_micros: 1_000 + i64::from(code),
        status_code: Some(code),
        error_kind: None,
        error_message: None,
        response_body: body.into(),
        decision: Decision {
            status: if succeeded {
                status::DELIVERED
            } else {
                status::FAILING
            },
            next_attempt_at: (!succeeded).then(|| now_micros() + HOUR),
            last_error: (!succeeded).then(|| format!("HTTP {code}")),
            endpoint: EndpointChange::None,
        },
    };
    let mut out = store.record_attempts(&[record]).await.expect("record");
    out.pop().expect("one outcome")
}

async fn current(store: &Store, tenant: &str, id: &str) -> delivery::Model {
    store
        .get_delivery(tenant, id)
        .await
        .expect("read")
        .expect("the delivery")
}

/// Every page of `size` attempts, in order.
async fn all_attempts(store: &Store, tenant: &str, id: &str, size: u32) -> Vec<attempt::Model> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = Page::parse(size, &token).expect("page");
        let (rows, next) = store.list_attempts(tenant, id, &page).await.expect("list");
        assert!(rows.len() <= size as usize, "a page holds at most its size");
        out.extend(rows);
        if next.is_empty() {
            return out;
        }
        token = next;
        assert!(out.len() < 20, "pagination does not end");
    }
}

async fn rows_in_attempts(store: &Store, delivery_id: &str) -> i64 {
    let row = store
        .db
        .query_one(sea_orm::Statement::from_string(
            store.db.get_database_backend(),
            format!("SELECT count(*) AS n FROM attempts WHERE delivery_id = '{delivery_id}'"),
        ))
        .await
        .expect("count")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("n")
}

async fn every_attempt_listed_once_in_order(store: &Store, postgres: bool) {
    let (tenant, endpoint) =
        store_tenant_with_endpoint(store, "log", "http://127.0.0.1:9/hook").await;
    insert_pending_delivery(&store.db, (&tenant, &endpoint), "evt_log", "dlv_log").await;

    let d = current(store, &tenant, "dlv_log").await;
    assert!(matches!(
        record(store, &d, 503, "busy").await,
        Recorded::Applied { .. }
    ));
    let after_one = all_attempts(store, &tenant, "dlv_log", 10).await;
    assert_eq!(after_one.len(), 1, "the first attempt is listed");
    if postgres {
        assert_eq!(
            rows_in_attempts(store, "dlv_log").await,
            0,
            "the latest attempt is kept on the delivery's row"
        );
    }

    let d = current(store, &tenant, "dlv_log").await;
    assert!(matches!(
        record(store, &d, 500, "boom").await,
        Recorded::Applied { .. }
    ));
    if postgres {
        assert_eq!(
            rows_in_attempts(store, "dlv_log").await,
            1,
            "the first attempt moved to `attempts`"
        );
    }

    // Superseded while the third attempt is in flight: the attempt is still logged.
    let in_flight = current(store, &tenant, "dlv_log").await;
    store
        .retry_delivery(&in_flight)
        .await
        .expect("manual retry");
    assert_eq!(record(store, &in_flight, 204, "").await, Recorded::Finished);
    let finished = current(store, &tenant, "dlv_log").await;
    assert_eq!(finished.status, status::FAILED, "it stays superseded");
    assert_eq!(finished.attempts, 3);
    assert_eq!(finished.last_response_code, Some(204));

    let listed = all_attempts(store, &tenant, "dlv_log", 10).await;
    let summary: Vec<(i32, Option<i32>, bool, &str)> = listed
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.status_code,
                a.succeeded,
                a.response_body.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, Some(503), false, "busy"),
            (2, Some(500), false, "boom"),
            (3, Some(204), true, ""),
        ]
    );
    assert_eq!(
        listed[0], after_one[0],
        "an attempt reads the same once moved"
    );
    let durations: Vec<i64> = listed.iter().map(|a| a.duration_micros).collect();
    assert_eq!(durations, vec![1_503, 1_500, 1_204]);
    let mut ids: Vec<&str> = listed.iter().map(|a| a.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct attempts: {ids:?}");
    assert!(
        listed.iter().all(|a| a.delivery_id == "dlv_log"
            && a.tenant_id == tenant
            && a.endpoint_id == endpoint)
    );
    for size in [1, 2] {
        assert_eq!(
            all_attempts(store, &tenant, "dlv_log", size).await,
            listed,
            "pages of {size}"
        );
    }
    assert!(
        all_attempts(store, "tnt_other", "dlv_log", 10)
            .await
            .is_empty(),
        "another tenant sees none of them"
    );
}

#[tokio::test]
async fn attempt_log_on_postgres() {
    let (store, _fresh) = fresh_store(true).await;
    every_attempt_listed_once_in_order(&store, true).await;
}

#[tokio::test]
async fn attempt_log_on_sqlite() {
    let (store, _fresh) = fresh_store(false).await;
    every_attempt_listed_once_in_order(&store, false).await;
}
