//! PostgreSQL forms of the hot statements.
//!
//! The generic forms list their rows as values (`IN ($1, $2, …)`, multi-row `VALUES`), so
//! their text changes with the batch size: each size is parsed, planned and prepared
//! anew on every pooled connection, which costs an extra round trip and most of the
//! database's CPU under load. These forms pass each column as one array parameter
//! (`= ANY($1)`, `UNNEST`), so their text is fixed: prepared once per connection, one
//! round trip per execution. SQLite keeps the generic forms (it has no arrays, and no
//! network round trips to save).
//!
//! Arrays cannot carry NULL elements here (the binder takes `Vec<T>`), so nullable
//! columns travel as a sentinel that `NULLIF` turns back into NULL: `0` for times and
//! status codes, `''` for text. None of those is a meaningful stored value.
//!
//! **Plans.** The claim and the record run for every dispatch and every batch of finished
//! attempts; they are meant to be planned once per connection and the plan reused. Two
//! things stood in the way (`pg_stat_statements` and `auto_explain`, seventh round of
//! docs/BENCHMARKS.md):
//! - PostgreSQL gives a prepared statement's first five executions custom plans, made for
//!   the values given, and keeps the generic plan afterwards only if it costs no more than
//!   they did. A custom plan knows each array's length, and with the few rows a dispatch
//!   carries under moderate load it always looked cheaper than the generic plan (which
//!   assumes ten), so every call was planned anew: the claim spent twice as long planning
//!   as executing. These statements read their arrays as `(SELECT $1::text[])`: the length
//!   is then unknown to both plans, which cost the same, and the generic plan is kept.
//! - A generic plan is made once, and a fresh database's tables are small when it is: it
//!   updated the claimed rows through a hash join over a sequential scan of `deliveries`,
//!   and kept doing so as the table grew (most of the record's slow executions in a4).
//!   Sessions run with `enable_seqscan = off` (`store::connect_postgres`), so a sequential
//!   scan is chosen only where no index serves; and the lookups name only the primary
//!   key (the other conditions sit outside `LATERAL … OFFSET 0`), so no other index can
//!   be chosen for them.

use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, Value, sea_query::ArrayType};

/// Whether the connection is PostgreSQL, so the forms below apply.
pub fn is_postgres<C: ConnectionTrait>(conn: &C) -> bool {
    conn.get_database_backend() == DatabaseBackend::Postgres
}

pub fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, values)
}

pub fn texts<I: IntoIterator<Item = String>>(items: I) -> Value {
    array(ArrayType::String, items.into_iter().map(Value::from))
}

pub fn bigints<I: IntoIterator<Item = i64>>(items: I) -> Value {
    array(ArrayType::BigInt, items.into_iter().map(Value::from))
}

pub fn ints<I: IntoIterator<Item = i32>>(items: I) -> Value {
    array(ArrayType::Int, items.into_iter().map(Value::from))
}

pub fn bools<I: IntoIterator<Item = bool>>(items: I) -> Value {
    array(ArrayType::Bool, items.into_iter().map(Value::from))
}

/// A nullable text column: `''` stands for NULL (undo with `NULLIF(x, '')`).
pub fn opt_texts<I: IntoIterator<Item = Option<String>>>(items: I) -> Value {
    texts(items.into_iter().map(Option::unwrap_or_default))
}

/// A nullable bigint column: `0` stands for NULL (undo with `NULLIF(x, 0)`).
pub fn opt_bigints<I: IntoIterator<Item = Option<i64>>>(items: I) -> Value {
    bigints(items.into_iter().map(|v| v.unwrap_or(0)))
}

/// A nullable int column: `0` stands for NULL (undo with `NULLIF(x, 0)`).
pub fn opt_ints<I: IntoIterator<Item = Option<i32>>>(items: I) -> Value {
    ints(items.into_iter().map(|v| v.unwrap_or(0)))
}

fn array(ty: ArrayType, items: impl Iterator<Item = Value>) -> Value {
    Value::Array(ty, Some(Box::new(items.collect())))
}
