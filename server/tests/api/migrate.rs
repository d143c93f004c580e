//! Migrations on SQLite: they run on one connection, in one transaction (`Store::migrate`).
//!
//! A pooled SQLite connection checks a `CREATE INDEX` against the schema it last read
//! before it looks for changes made by other connections: an index that one migration
//! dropped and a later one created again (`deliveries_due`, migrations 4 and 8) was
//! still there for a connection that had read the schema before the drop.

use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, TransactionTrait};

use herald::store::Store;

use crate::helpers::sqlite_url;

async fn tables(store: &Store) -> Vec<String> {
    let rows = store
        .db
        .query_all(sea_orm::Statement::from_string(
            store.db.get_database_backend(),
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
        ))
        .await
        .expect("read the schema");
    rows.iter()
        .map(|r| r.try_get::<String>("", "name").expect("name"))
        .collect()
}

#[tokio::test]
async fn sqlite_migrates_beside_connections_that_read_an_older_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::connect(&sqlite_url(&dir)).await.expect("connect");
    Migrator::up(&store.db, Some(3))
        .await
        .expect("migrations 1 to 3");
    // Each of the pool's connections reads the schema, `deliveries_due` included.
    let mut readers = Vec::new();
    for _ in 0..8 {
        let txn = store.db.begin().await.expect("begin");
        txn.execute_unprepared("SELECT count(*) FROM deliveries")
            .await
            .expect("read");
        readers.push(txn);
    }
    for txn in readers {
        txn.commit().await.expect("commit");
    }
    // Another process takes the schema on: migration 4 drops `deliveries_due`.
    let other = Store::connect(&sqlite_url(&dir)).await.expect("connect");
    Migrator::up(&other.db, Some(4))
        .await
        .expect("migrations 4 to 7");
    other.db.close().await.ok();

    store
        .migrate()
        .await
        .expect("migration 8 creates `deliveries_due` again");
    let applied = Migrator::get_applied_migrations(&store.db)
        .await
        .expect("applied");
    assert_eq!(applied.len(), Migrator::migrations().len(), "all applied");
}

#[tokio::test]
async fn a_failed_sqlite_upgrade_leaves_the_database_as_it_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::connect(&sqlite_url(&dir)).await.expect("connect");
    // A table of the first migration's is there already: that migration fails halfway,
    // after creating the tables before it.
    store
        .db
        .execute_unprepared("CREATE TABLE events (id TEXT PRIMARY KEY)")
        .await
        .expect("a conflicting table");
    let err = store.migrate().await.expect_err("the upgrade fails");
    assert!(err.to_string().contains("events"), "{err}");
    assert_eq!(
        tables(&store).await,
        vec!["events".to_string()],
        "nothing of the failed upgrade is left"
    );
}
