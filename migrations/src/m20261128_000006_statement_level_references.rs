//! References checked once per statement instead of once per row (PostgreSQL).
//!
//! A foreign key checks each inserted row with its own query, and that query locks the
//! parent row. Every publish and every recorded attempt inserted rows that point at the
//! same few hot parents (the tenant, the endpoint) from several connections at once, so
//! those row locks became multixacts, and the checks of rows whose parent the same
//! statement had just written (a delivery's event, an attempt's delivery) still wrote a
//! lock record each. Without them PostgreSQL used a quarter to a third less CPU per
//! delivery in batch publishes and fan-out; these triggers keep about half of that
//! (docs/BENCHMARKS.md, *Tenth round*). A statement of one row pays a little more than
//! its foreign-key checks did.
//!
//! The five hot foreign keys (`events.tenant_id`, `deliveries.tenant_id`,
//! `deliveries.endpoint_id`, `deliveries.event_id`, `attempts.delivery_id`) become
//! statement-level triggers with the same guarantees:
//! - **Checks.** After each `INSERT` statement, one query per parent looks up every new
//!   row's parent and raises `foreign_key_violation` (SQLSTATE 23503, as the foreign
//!   key did, naming the column and the id) if one is missing.
//! - **Races with a delete.** A check that passed must not let a concurrent delete of
//!   the parent leave its rows behind.
//!   - Tenants and endpoints: an inserting statement takes a shared advisory lock per
//!     tenant (in memory, no row lock), and a delete of a tenant or an endpoint takes
//!     it exclusively before cascading. The delete therefore waits for inserts already
//!     under way to commit, and its cascade sees their rows. An insert that comes later
//!     waits for the delete and then finds its parent gone.
//!   - Events and deliveries as parents: their rows are locked `FOR KEY SHARE` as
//!     before, but only those that another transaction wrote. An event inserted by
//!     the same publish, or a delivery updated by the same record statement, cannot be
//!     deleted by anyone else before this transaction commits.
//! - **Cascades.** Statement-level `AFTER DELETE` triggers delete the children of every
//!   deleted tenant, endpoint, event and delivery, as `ON DELETE CASCADE` did.
//!
//! Cold references (API keys and endpoints to their tenant) keep their foreign keys.
//! SQLite keeps all of them: there the checks take no locks that other writers share.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The advisory lock namespace (`'HRLD'`), so that other users of advisory locks in the
/// same database cannot collide with these.
const LOCK_CLASS: &str = "1213353028";

/// Checks, in one query, that each new row's references name existing rows; raises as
/// a foreign key would, naming the first missing one. `refs`: column, parent table, and
/// what a parent row is called. The `OFFSET 0` keeps each lookup an index probe: a
/// transition table has no statistics, and a plan that scans a parent table costs
/// milliseconds.
fn check(table: &str, refs: &[(&str, &str, &str)]) -> String {
    let case = |pick: &dyn Fn(&str, &str) -> String| {
        let arms: String = refs
            .iter()
            .enumerate()
            .map(|(i, (column, _, what))| {
                format!(" WHEN p{i}.found IS NULL THEN {}", pick(column, what))
            })
            .collect();
        format!("CASE{arms} END")
    };
    let joins: String = refs
        .iter()
        .enumerate()
        .map(|(i, (column, parent, _))| {
            format!(
                " LEFT JOIN LATERAL (SELECT 1 AS found FROM {parent} p
                     WHERE p.id = n.{column} OFFSET 0) p{i} ON true"
            )
        })
        .collect();
    let missing: Vec<String> = (0..refs.len())
        .map(|i| format!("p{i}.found IS NULL"))
        .collect();
    format!(
        "SELECT {}, {}, {} INTO missing_column, missing_what, missing
         FROM new_rows n{joins}
         WHERE {} LIMIT 1;
         IF FOUND THEN
             RAISE foreign_key_violation USING TABLE = '{table}',
                 CONSTRAINT = '{table}_' || missing_column || '_fkey',
                 MESSAGE = format('{table}.%s: %s %s does not exist', missing_column,
                                  missing_what, missing);
         END IF;",
        case(&|column, _| format!("'{column}'")),
        case(&|_, what| format!("'{what}'")),
        case(&|column, _| format!("n.{column}")),
        missing.join(" OR "),
    )
}

/// Takes `locks` (queries from the two functions below) in one statement, before the
/// check: the check's own snapshot must come after any wait for a lock.
fn lock(locks: &[String]) -> String {
    format!("PERFORM 1 FROM ({}) locked;", locks.join(" UNION ALL "))
}

/// Locks the parents (of `parent`) that another transaction wrote, as a foreign key's
/// check would; a parent this transaction wrote cannot be deleted by another before it
/// commits, and locking it would only write a lock record.
fn others(column: &str, parent: &str) -> String {
    format!(
        "SELECT 1 FROM new_rows n, LATERAL (
             SELECT 1 FROM {parent} p
             WHERE p.id = n.{column} AND p.xmin <> pg_current_xact_id()::xid
             OFFSET 0 FOR KEY SHARE) l"
    )
}

/// Shares (inserts) or takes (deletes) the advisory lock of each tenant in `rows`,
/// in one order so that two deletes cannot deadlock.
fn tenants(function: &str, column: &str, rows: &str) -> String {
    format!(
        "SELECT 1 FROM (SELECT DISTINCT {column} AS t FROM {rows} ORDER BY 1) s,
             LATERAL {function}({LOCK_CLASS}, hashtext(s.t)) l"
    )
}

fn function(name: &str, body: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE missing text; missing_column text; missing_what text;
         BEGIN
             {body}
             RETURN NULL;
         END $$"
    )
}

fn up_statements() -> Vec<String> {
    let shared = |column| tenants("pg_advisory_xact_lock_shared", column, "new_rows");
    let exclusive = |column| lock(&[tenants("pg_advisory_xact_lock", column, "old_rows")]);
    let mut sql: Vec<String> = [
        "ALTER TABLE attempts DROP CONSTRAINT attempts_delivery_id_fkey",
        "ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_id_fkey",
        "ALTER TABLE deliveries DROP CONSTRAINT deliveries_endpoint_id_fkey",
        "ALTER TABLE deliveries DROP CONSTRAINT deliveries_tenant_id_fkey",
        "ALTER TABLE events DROP CONSTRAINT events_tenant_id_fkey",
    ]
    .map(String::from)
    .to_vec();
    sql.push(function(
        "herald_events_parents",
        &[
            lock(&[shared("tenant_id")]),
            check("events", &[("tenant_id", "tenants", "tenant")]),
        ]
        .join("\n"),
    ));
    sql.push(function(
        "herald_deliveries_parents",
        &[
            lock(&[shared("tenant_id"), others("event_id", "events")]),
            check(
                "deliveries",
                &[
                    ("tenant_id", "tenants", "tenant"),
                    ("endpoint_id", "endpoints", "endpoint"),
                    ("event_id", "events", "event"),
                ],
            ),
        ]
        .join("\n"),
    ));
    sql.push(function(
        "herald_attempts_parents",
        &[
            lock(&[others("delivery_id", "deliveries")]),
            check("attempts", &[("delivery_id", "deliveries", "delivery")]),
        ]
        .join("\n"),
    ));
    sql.push(function(
        "herald_tenants_cascade",
        &[
            exclusive("id"),
            "DELETE FROM deliveries WHERE tenant_id IN (SELECT id FROM old_rows);
             DELETE FROM events WHERE tenant_id IN (SELECT id FROM old_rows);"
                .to_string(),
        ]
        .join("\n"),
    ));
    sql.push(function(
        "herald_endpoints_cascade",
        &[
            exclusive("tenant_id"),
            "DELETE FROM deliveries WHERE endpoint_id IN (SELECT id FROM old_rows);".to_string(),
        ]
        .join("\n"),
    ));
    sql.push(function(
        "herald_events_cascade",
        "DELETE FROM deliveries WHERE event_id IN (SELECT id FROM old_rows);",
    ));
    sql.push(function(
        "herald_deliveries_cascade",
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM old_rows);",
    ));
    for (table, name) in TRIGGERS {
        let (event, transition) = match name {
            "parents" => ("INSERT", "NEW TABLE AS new_rows"),
            _ => ("DELETE", "OLD TABLE AS old_rows"),
        };
        sql.push(format!(
            "CREATE TRIGGER {table}_{name} AFTER {event} ON {table}
             REFERENCING {transition}
             FOR EACH STATEMENT EXECUTE FUNCTION herald_{table}_{name}()"
        ));
    }
    sql
}

/// Each trigger: its table and whether it checks parents or cascades a delete.
const TRIGGERS: [(&str, &str); 7] = [
    ("events", "parents"),
    ("deliveries", "parents"),
    ("attempts", "parents"),
    ("tenants", "cascade"),
    ("endpoints", "cascade"),
    ("events", "cascade"),
    ("deliveries", "cascade"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let Some(db) = crate::postgres_only(manager) else {
            return Ok(());
        };
        for sql in up_statements() {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let Some(db) = crate::postgres_only(manager) else {
            return Ok(());
        };
        for (table, name) in TRIGGERS {
            db.execute_unprepared(&format!(
                "DROP TRIGGER IF EXISTS {table}_{name} ON {table};
                 DROP FUNCTION IF EXISTS herald_{table}_{name}()"
            ))
            .await?;
        }
        for (table, column, parent) in [
            ("events", "tenant_id", "tenants"),
            ("deliveries", "tenant_id", "tenants"),
            ("deliveries", "endpoint_id", "endpoints"),
            ("deliveries", "event_id", "events"),
            ("attempts", "delivery_id", "deliveries"),
        ] {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} ADD CONSTRAINT {table}_{column}_fkey
                 FOREIGN KEY ({column}) REFERENCES {parent} (id) ON DELETE CASCADE"
            ))
            .await?;
        }
        Ok(())
    }
}
