//! The database claim under contention (PostgreSQL): two workers that hold the same
//! delivery (a duplicate queue entry) and claim it at the same moment must not both get it,
//! or the receiver gets the webhook twice.

use std::time::Duration;

use herald::{store::Store, time::now_micros};
use sea_orm::{ConnectionTrait, Database, TransactionTrait};

use crate::helpers::{
    create_pg_database, eventually, insert_pending_delivery, store_tenant_with_endpoint,
};

/// Claims `delivery` for one worker; whether it got it.
async fn claim(store: &Store, delivery: &str, endpoint: &str) -> bool {
    let now = now_micros();
    let (claimed, _) = store
        .claim_for_attempts(
            vec![delivery.to_string()],
            Vec::new(),
            vec![endpoint.to_string()],
            now + 1_000_000,
            now + 60_000_000,
            now + 120_000_000,
        )
        .await
        .expect("claim");
    claimed.iter().any(|d| d.id == delivery)
}

#[tokio::test]
async fn concurrent_claims_of_one_delivery_give_it_to_one_worker() {
    let (name, url) = create_pg_database().await;
    let store = Store::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let (tenant, endpoint) =
        store_tenant_with_endpoint(&store, "claims", "http://127.0.0.1:9/hook").await;
    let sql = Database::connect(&url).await.expect("connect");
    insert_pending_delivery(&sql, (&tenant, &endpoint), "evt_claims", "dlv_claims").await;

    // Another transaction holds the row (as a recorder or a claim would) while both
    // workers read it as claimable and then wait for it: when it commits, both find a
    // newer version of the row than the one they read.
    let holder = sql.begin().await.expect("begin");
    holder
        .execute_unprepared(
            "UPDATE deliveries SET updated_at = updated_at + 1 WHERE id = 'dlv_claims'",
        )
        .await
        .expect("hold the row");
    let (a, b) = (store.clone(), store.clone());
    let endpoint_id = endpoint.clone();
    let first = tokio::spawn({
        let endpoint_id = endpoint.clone();
        async move { claim(&a, "dlv_claims", &endpoint_id).await }
    });
    let second = tokio::spawn(async move { claim(&b, "dlv_claims", &endpoint_id).await });
    eventually(
        "both claims wait for the row",
        Duration::from_secs(10),
        || {
            let sql = &sql;
            let name = name.clone();
            async move {
                let row = sql
                    .query_one(sea_orm::Statement::from_string(
                        sea_orm::DatabaseBackend::Postgres,
                        format!(
                            "SELECT count(*) AS n FROM pg_stat_activity
                         WHERE datname = '{name}' AND wait_event_type = 'Lock'"
                        ),
                    ))
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no row")?;
                let waiting: i64 = row.try_get("", "n").map_err(|e| e.to_string())?;
                if waiting >= 2 {
                    Ok(())
                } else {
                    Err(format!("{waiting} waiting"))
                }
            }
        },
    )
    .await;
    holder.commit().await.expect("commit");

    let got = [first.await.unwrap(), second.await.unwrap()];
    assert_eq!(
        got.iter().filter(|g| **g).count(),
        1,
        "exactly one worker claims the delivery: {got:?}"
    );
}
