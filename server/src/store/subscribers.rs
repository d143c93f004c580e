//! The publish writer's copy of the tenants' enabled endpoints, with their filters
//! parsed, valid at one version of the endpoint set (`sequences.endpoints`, bumped by
//! trigger on every change that could alter matching; see migration 3).
//!
//! The copy is only ever used together with that version: the one-statement publish
//! (`events_pg.rs`) stores nothing when the database's version moved on, and the writer
//! then reloads. So a stale copy costs a retry, never a missed or extra delivery.

use std::{collections::HashMap, sync::Arc};

use sea_orm::{ConnectionTrait, FromQueryResult};

use super::pg;
use crate::{error::Result, filter::Filter};

/// Tenants kept at most; past that the copy starts over (it is only a cache).
const MAX_TENANTS: usize = 10_000;

/// One endpoint as matching needs it.
#[derive(Debug)]
pub struct Subscriber {
    pub id: String,
    pub environment: String,
    pub filter: Filter,
}

impl Subscriber {
    /// Whether an event of this type and environment goes to this endpoint.
    pub fn wants(&self, environment: &str, event_type: &str) -> bool {
        self.environment == environment && self.filter.matches(event_type)
    }
}

/// Enabled endpoints by tenant, as of `version`.
#[derive(Debug, Default)]
pub struct Subscribers {
    version: Option<i64>,
    tenants: HashMap<String, Arc<[Subscriber]>>,
}

#[derive(FromQueryResult)]
struct Row {
    version: i64,
    id: Option<String>,
    tenant_id: Option<String>,
    environment: Option<String>,
    filters: Option<String>,
}

impl Subscribers {
    /// Forgets everything: the database's version is now `version`.
    pub fn reset(&mut self, version: i64) {
        self.tenants.clear();
        self.version = Some(version);
    }

    /// Forgets everything, version included: the next load starts over.
    pub fn forget(&mut self) {
        self.tenants.clear();
        self.version = None;
    }

    /// The enabled endpoints of `tenant` (loaded by [`Subscribers::load`]).
    pub fn of(&self, tenant: &str) -> Arc<[Subscriber]> {
        self.tenants
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| Arc::new([]))
    }

    /// Makes sure every tenant of `tenants` is in the copy, with one query (PostgreSQL)
    /// for the missing ones. If the endpoint set changed since the copy was made, the
    /// copy starts over at the new version.
    /// Returns the version the copy is now valid at.
    pub async fn load<C: ConnectionTrait>(&mut self, conn: &C, tenants: &[&str]) -> Result<i64> {
        let missing: Vec<String> = tenants
            .iter()
            .filter(|t| !self.tenants.contains_key(**t))
            .map(|t| t.to_string())
            .collect();
        if let (true, Some(version)) = (missing.is_empty(), self.version) {
            return Ok(version);
        }
        if self.tenants.len() + missing.len() > MAX_TENANTS {
            self.tenants.clear();
        }
        // The version and the endpoints from one snapshot: one statement.
        const SQL: &str = "SELECT v.value AS version, e.id, e.tenant_id, e.environment, e.filters
            FROM sequences v
            LEFT JOIN endpoints e ON e.tenant_id = ANY($1) AND e.enabled
            WHERE v.name = 'endpoints'";
        let rows = Row::find_by_statement(pg::stmt(SQL, vec![pg::texts(missing.clone())]))
            .all(conn)
            .await?;
        let Some(version) = rows.first().map(|r| r.version) else {
            return Err(crate::error::Error::Internal(anyhow::anyhow!(
                "the endpoints version row is missing (migration 3)"
            )));
        };
        if self.version != Some(version) {
            // What is cached was read at another version: only `missing` is current.
            self.reset(version);
        }
        let mut loaded: HashMap<String, Vec<Subscriber>> =
            missing.into_iter().map(|t| (t, Vec::new())).collect();
        for row in rows {
            let (Some(id), Some(tenant), Some(environment), Some(filters)) =
                (row.id, row.tenant_id, row.environment, row.filters)
            else {
                continue; // the LEFT JOIN's row when no tenant has an enabled endpoint
            };
            // As `endpoint::Model::filter_list` reads them.
            let patterns: Vec<String> = serde_json::from_str(&filters).unwrap_or_default();
            // An endpoint whose stored filters no longer parse matches nothing.
            let Some(filter) = Filter::stored(&patterns) else {
                continue;
            };
            loaded.entry(tenant).or_default().push(Subscriber {
                id,
                environment,
                filter,
            });
        }
        for (tenant, subscribers) in loaded {
            self.tenants.insert(tenant, subscribers.into());
        }
        Ok(version)
    }
}
