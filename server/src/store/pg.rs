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
