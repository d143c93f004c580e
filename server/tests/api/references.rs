//! What deleting a tenant, an endpoint or an event takes with it, and the rows the
//! database refuses because their parent does not exist. On PostgreSQL the hot
//! references are statement-level triggers, not foreign keys (migration 6); the last
//! test checks, with two connections, that such a check and a concurrent delete of the
//! parent cannot leave a row behind in either order. The keys those checks and every
//! lookup compare are byte-ordered on PostgreSQL (migration 7), all of them.

use std::time::Duration;

use herald::proto::{DeleteEndpointRequest, DeleteTenantRequest};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbErr, SqlErr, TransactionTrait};

use crate::{
    both_backends,
    helpers::{
        Backend, TenantKeys, TestApp, authed, clean_up_blocking, create_pg_database, endpoint,
        eventually, publish_license, spawn_app,
    },
    receiver::Receiver,
};

both_backends!(
    deletes_take_their_rows_along,
    rows_without_a_parent_are_refused
);

/// Publishes one event and returns its id.
async fn publish(app: &TestApp, keys: &TenantKeys, id: &str) -> String {
    publish_license(app, keys, id).await.id
}

async fn database(app: &TestApp) -> DatabaseConnection {
    Database::connect(app.config.database_url.expose())
        .await
        .expect("open the test database")
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql.to_string(),
        ))
        .await
        .expect(sql)
        .expect("a row");
    row.try_get_by_index(0).expect("a count")
}

/// How many delivery rows have id `id` (0 or 1).
async fn deliveries_with_id(db: &DatabaseConnection, id: &str) -> i64 {
    count(
        db,
        &format!("SELECT count(*) FROM deliveries WHERE id = '{id}'"),
    )
    .await
}

/// A delivery row of `event` to `endpoint`, already final, so that no worker picks it up.
fn insert_delivery(id: &str, tenant: &str, event: &str, endpoint: &str) -> String {
    format!(
        "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type,
             idempotency_token, status, attempts, created_at, updated_at)
         VALUES ('{id}', '{tenant}', '{event}', '{endpoint}', 'license.created', '{id}',
             'FAILED', 0, 1, 1)"
    )
}

fn assert_refused(result: Result<sea_orm::ExecResult, DbErr>, column: &str) {
    let err = result.expect_err(column);
    assert!(
        matches!(
            err.sql_err(),
            Some(SqlErr::ForeignKeyConstraintViolation(_))
        ),
        "{column}: {err}"
    );
}

async fn deletes_take_their_rows_along(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let rx = Receiver::start().await;
    let first = endpoint(&app, &acme, rx.url("/first")).await;
    let second = endpoint(&app, &acme, rx.url("/second")).await;
    endpoint(&app, &other, rx.url("/other")).await;
    let kept_event = publish(&app, &acme, "lic-1").await;
    let pruned_event = publish(&app, &acme, "lic-2").await;
    publish(&app, &other, "lic-3").await;
    let db = database(&app).await;
    eventually(
        "every delivery attempted",
        Duration::from_secs(15),
        || async {
            match count(&db, &logged_attempts("true")).await {
                5 => Ok(()),
                n => Err(format!("{n} attempts")),
            }
        },
    )
    .await;

    // An endpoint takes its deliveries and their attempts; its sibling keeps its own.
    app.endpoints()
        .await
        .delete_endpoint(authed(
            &acme.manager,
            DeleteEndpointRequest {
                id: first.clone(),
                tenant_id: String::new(),
            },
        ))
        .await
        .expect("delete endpoint");
    for (endpoint, left, whose) in [
        (&first, 0, "the deleted endpoint"),
        (&second, 2, "its sibling"),
    ] {
        let filter = format!("endpoint_id = '{endpoint}'");
        let sql = format!("SELECT count(*) FROM deliveries WHERE {filter}");
        assert_eq!(count(&db, &sql).await, left, "deliveries of {whose}");
        let sql = logged_attempts(&filter);
        assert_eq!(count(&db, &sql).await, left, "attempts of {whose}");
    }

    // An event (as retention deletes them) takes its delivery and that one's attempt.
    let deleted = db
        .execute_unprepared(&format!("DELETE FROM events WHERE id = '{pruned_event}'"))
        .await
        .expect("delete the event");
    assert_eq!(deleted.rows_affected(), 1);
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM deliveries WHERE event_id = '{pruned_event}'")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM deliveries WHERE event_id = '{kept_event}'")
        )
        .await,
        1
    );
    assert_eq!(
        count(&db, &logged_attempts("tenant_id = 'acme'")).await,
        1,
        "only the kept event's attempt is left"
    );

    // A tenant takes everything it owns, and nothing of another tenant.
    app.admin()
        .await
        .delete_tenant(authed(
            &app.admin_key,
            DeleteTenantRequest { id: "acme".into() },
        ))
        .await
        .expect("delete tenant");
    for table in ["events", "deliveries", "attempts", "endpoints", "api_keys"] {
        let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id = 'acme'");
        assert_eq!(count(&db, &sql).await, 0, "{table} of the deleted tenant");
    }
    for table in ["events", "deliveries", "endpoints"] {
        let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id = 'other'");
        assert_eq!(count(&db, &sql).await, 1, "{table} of the other tenant");
    }
    assert_eq!(
        count(&db, &logged_attempts("tenant_id = 'other'")).await,
        1,
        "attempts of the other tenant"
    );
    db.close().await.ok();
}

async fn rows_without_a_parent_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.tenant("acme").await;
    let rx = Receiver::start().await;
    let hook = endpoint(&app, &acme, rx.url("/hook")).await;
    let event = publish(&app, &acme, "lic-1").await;
    let db = database(&app).await;

    assert_refused(
        db.execute_unprepared(
            "INSERT INTO events (seq, id, tenant_id, event_type, environment, occurred_at,
                 received_at, payload)
             VALUES (999999, 'evt_orphan', 'nobody', 'license.created', '', 1, 1, '{}')",
        )
        .await,
        "events.tenant_id",
    );
    for (column, sql) in [
        (
            "deliveries.tenant_id",
            insert_delivery("dlv_t", "nobody", &event, &hook),
        ),
        (
            "deliveries.endpoint_id",
            insert_delivery("dlv_e", "acme", &event, "ep_nobody"),
        ),
        (
            "deliveries.event_id",
            insert_delivery("dlv_v", "acme", "evt_nobody", &hook),
        ),
    ] {
        assert_refused(db.execute_unprepared(&sql).await, column);
    }
    assert_refused(
        db.execute_unprepared(&format!(
            "INSERT INTO attempts (id, delivery_id, tenant_id, endpoint_id, attempt,
                 started_at, duration_micros, succeeded, response_body)
             VALUES ('att_orphan', 'dlv_nobody', 'acme', '{hook}', 1, 1, 1, false, '')"
        ))
        .await,
        "attempts.delivery_id",
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM deliveries WHERE id LIKE 'dlv\\__' ESCAPE '\\'"
        )
        .await,
        0,
        "a refused statement leaves nothing"
    );

    // Rows whose parents exist are accepted, by the same checks.
    db.execute_unprepared(&insert_delivery("dlv_ok", "acme", &event, &hook))
        .await
        .expect("a delivery of an existing event and endpoint");
    db.execute_unprepared(&format!(
        "INSERT INTO attempts (id, delivery_id, tenant_id, endpoint_id, attempt, started_at,
             duration_micros, succeeded, response_body)
         VALUES ('att_ok', 'dlv_ok', 'acme', '{hook}', 1, 1, 1, false, '')"
    ))
    .await
    .expect("an attempt of an existing delivery");
    db.close().await.ok();
}

/// Waits until some connection to this test's database waits for one of Herald's
/// advisory locks (migration 6).
async fn someone_waits_for_a_tenant_lock(db: &DatabaseConnection) {
    eventually(
        "a waiter on a tenant lock",
        Duration::from_secs(10),
        || async {
            match count(
                db,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
               AND classid = 1213353028
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .await
            {
                0 => Err("nobody waits".to_string()),
                _ => Ok(()),
            }
        },
    )
    .await;
}

/// An insert whose check passed and a delete of its parent, in either order: the delete
/// waits for the insert and takes its row along, or the insert waits for the delete
/// and is refused. Either way no delivery is left without its endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_and_an_insert_of_its_child_do_not_race() {
    let app = spawn_app(Backend::Postgres).await;
    let acme = app.tenant("acme").await;
    let rx = Receiver::start().await;
    let first = endpoint(&app, &acme, rx.url("/first")).await;
    let second = endpoint(&app, &acme, rx.url("/second")).await;
    let event = publish(&app, &acme, "lic-1").await;
    let (inserter, deleter, observer) = (
        database(&app).await,
        database(&app).await,
        database(&app).await,
    );

    // The insert first: the delete waits for its commit, then deletes its row too.
    let txn = inserter.begin().await.expect("begin");
    txn.execute_unprepared(&insert_delivery("dlv_race_1", "acme", &event, &first))
        .await
        .expect("insert while the endpoint exists");
    let sql = format!("DELETE FROM endpoints WHERE id = '{first}'");
    let delete = {
        let deleter = deleter.clone();
        tokio::spawn(async move { deleter.execute_unprepared(&sql).await })
    };
    someone_waits_for_a_tenant_lock(&observer).await;
    assert!(!delete.is_finished(), "the delete waits for the insert");
    txn.commit().await.expect("commit the insert");
    delete.await.expect("join").expect("delete the endpoint");
    assert_eq!(
        deliveries_with_id(&observer, "dlv_race_1").await,
        0,
        "the delete took the delivery committed while it waited"
    );

    // The delete first: the insert waits for its commit, then is refused.
    let txn = deleter.begin().await.expect("begin");
    txn.execute_unprepared(&format!("DELETE FROM endpoints WHERE id = '{second}'"))
        .await
        .expect("delete the endpoint");
    let sql = insert_delivery("dlv_race_2", "acme", &event, &second);
    let insert = {
        let inserter = inserter.clone();
        tokio::spawn(async move { inserter.execute_unprepared(&sql).await })
    };
    someone_waits_for_a_tenant_lock(&observer).await;
    assert!(!insert.is_finished(), "the insert waits for the delete");
    txn.commit().await.expect("commit the delete");
    assert_refused(insert.await.expect("join"), "deliveries.endpoint_id");
    assert_eq!(deliveries_with_id(&observer, "dlv_race_2").await, 0);
    for db in [inserter, deleter, observer] {
        db.close().await.ok();
    }
}

/// Counts the logged attempts that match `filter`: those in `attempts` and the latest
/// attempts that PostgreSQL keeps on their delivery's row (migration 9).
fn logged_attempts(filter: &str) -> String {
    format!(
        "SELECT (SELECT count(*) FROM attempts WHERE {filter})
              + (SELECT count(*) FROM deliveries WHERE last_attempt_id IS NOT NULL AND {filter})"
    )
}

/// The collation of each key column (`None`: the database's default), by table and
/// column: every column named `id`, `*_id` or `name` of `sequences`, and the looked-up
/// keys.
async fn key_collations(db: &DatabaseConnection) -> Vec<(String, Option<String>)> {
    let rows = db
        .query_all(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT table_name || '.' || column_name AS col, collation_name
             FROM information_schema.columns
             WHERE table_schema = 'public' AND data_type = 'character varying'
               AND (column_name = 'id' OR column_name LIKE '%\\_id'
                    OR column_name IN ('key_hash', 'idempotency_key')
                    OR (table_name = 'sequences' AND column_name = 'name'))
             ORDER BY 1",
        ))
        .await
        .expect("read the columns");
    rows.iter()
        .map(|row| {
            (
                row.try_get("", "col").expect("col"),
                row.try_get("", "collation_name").expect("collation"),
            )
        })
        .collect()
}

/// On PostgreSQL every key compares bytes (migration 7), all of them at once: an id
/// compared with a reference to it in another collation could not use its index. The
/// migration reverts to the default collation and applies again.
#[tokio::test]
async fn keys_compare_bytes_and_the_change_reverts() {
    use migrations::{Migrator, MigratorTrait};
    let (name, url) = create_pg_database().await;
    let db = Database::connect(&url).await.expect("connect");
    Migrator::up(&db, None).await.expect("migrate");
    let keys = key_collations(&db).await;
    assert!(keys.len() >= 18, "the key columns: {keys:?}");
    for (column, collation) in &keys {
        assert_eq!(collation.as_deref(), Some("C"), "{column}");
    }
    // Migrations 9 and 8 first, then 7.
    Migrator::down(&db, Some(3))
        .await
        .expect("revert migrations 9 to 7");
    for (column, collation) in key_collations(&db).await {
        assert_eq!(collation, None, "{column} after the revert");
    }
    Migrator::up(&db, None).await.expect("migrate again");
    assert_eq!(key_collations(&db).await, keys);
    db.close().await.ok();
    clean_up_blocking(Some(name), None);
}
