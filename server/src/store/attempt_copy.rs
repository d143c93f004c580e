//! The delivery worker's copy of the endpoints it sends to, with their tenants
//! (PostgreSQL), valid at one version of what an attempt reads of them
//! (`sequences.attempts`, bumped by trigger on every change to an endpoint or a tenant;
//! see migration 5).
//!
//! Each claim reads that version in its own statement (`claim_for_attempts`), so the
//! copy is used only when nothing has changed since it was made; otherwise the endpoints
//! are read again, beside the claim as before. Reading them with every claim was a
//! second statement per dispatch that cost PostgreSQL more to plan than to run.

use std::{collections::HashMap, sync::Arc};

use sea_orm::{ConnectionTrait, FromQueryResult};

use super::{
    entities::{endpoint, tenant},
    pg,
};
use crate::error::{Error, Result};

/// Endpoints kept at most; past that the copy starts over (it is only a cache).
const MAX_ENDPOINTS: usize = 10_000;

/// Endpoints and their tenants as read at one version.
#[derive(Debug, Default)]
pub struct Loaded {
    pub version: i64,
    pub endpoints: HashMap<String, Arc<endpoint::Model>>,
    pub tenants: HashMap<String, Arc<tenant::Model>>,
}

impl Loaded {
    /// Reads the endpoints `ids`, their tenants and the version, from one snapshot.
    pub async fn read<C: ConnectionTrait>(conn: &C, mut ids: Vec<String>) -> Result<Loaded> {
        ids.sort_unstable();
        ids.dedup();
        const SQL: &str = "SELECT v.value AS ctx_version, e.*, t.id AS t_id, t.name AS t_name,
                   t.signing_key AS t_signing_key, t.public_key AS t_public_key,
                   t.created_at AS t_created_at
            FROM sequences v
            LEFT JOIN (endpoints e JOIN tenants t ON t.id = e.tenant_id) ON e.id = ANY($1)
            WHERE v.name = 'attempts'";
        let rows = conn.query_all(pg::stmt(SQL, vec![pg::texts(ids)])).await?;
        let Some(first) = rows.first() else {
            return Err(Error::Internal(anyhow::anyhow!(
                "the attempts version row is missing (migration 5)"
            )));
        };
        let mut loaded = Loaded {
            version: first.try_get("", "ctx_version")?,
            ..Loaded::default()
        };
        for row in rows {
            if row.try_get::<Option<String>>("", "id")?.is_none() {
                continue; // the LEFT JOIN's row when none of the endpoints exists
            }
            let endpoint = endpoint::Model::from_query_result(&row, "")?;
            let tenant = tenant::Model::from_query_result(&row, "t_")?;
            loaded
                .tenants
                .entry(tenant.id.clone())
                .or_insert_with(|| Arc::new(tenant));
            loaded
                .endpoints
                .insert(endpoint.id.clone(), Arc::new(endpoint));
        }
        Ok(loaded)
    }
}

/// The copy itself: what was loaded, all at one version (`None` before the first load).
#[derive(Debug, Default)]
pub struct AttemptCopy {
    held: Option<Loaded>,
}

impl AttemptCopy {
    /// Whether the copy holds every endpoint of `ids` (at whatever version it is).
    pub fn holds(&self, ids: &[String]) -> bool {
        self.held
            .as_ref()
            .is_some_and(|held| ids.iter().all(|id| held.endpoints.contains_key(id)))
    }

    /// Takes in what was read: added to the copy if read at its version, else the copy
    /// starts over from it (what it held was read at another version).
    pub fn absorb(&mut self, loaded: &Loaded) {
        let adds_up = self.held.as_ref().is_some_and(|held| {
            held.version == loaded.version
                && held.endpoints.len() + loaded.endpoints.len() <= MAX_ENDPOINTS
        });
        if !adds_up {
            self.held = None;
        }
        let held = self.held.get_or_insert_with(|| Loaded {
            version: loaded.version,
            ..Loaded::default()
        });
        held.endpoints.extend(
            loaded
                .endpoints
                .iter()
                .map(|(id, endpoint)| (id.clone(), endpoint.clone())),
        );
        held.tenants.extend(
            loaded
                .tenants
                .iter()
                .map(|(id, tenant)| (id.clone(), tenant.clone())),
        );
    }

    /// The endpoints `ids` with their tenants, if the copy is at `version` and holds
    /// them all.
    pub fn get(&self, version: i64, ids: &[String]) -> Option<Loaded> {
        let held = self.held.as_ref().filter(|held| held.version == version)?;
        let mut out = Loaded {
            version,
            ..Loaded::default()
        };
        for id in ids {
            let endpoint = held.endpoints.get(id)?;
            let tenant = held.tenants.get(&endpoint.tenant_id)?;
            out.tenants
                .entry(tenant.id.clone())
                .or_insert_with(|| tenant.clone());
            out.endpoints.insert(id.clone(), endpoint.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str, tenant: &str) -> Arc<endpoint::Model> {
        Arc::new(endpoint::Model {
            id: id.into(),
            tenant_id: tenant.into(),
            url: "https://example.com/hook".into(),
            filters: "[]".into(),
            enabled: true,
            disabled_reason: String::new(),
            description: String::new(),
            metadata: "{}".into(),
            environment: String::new(),
            format: "keygen".into(),
            schemes: "[]".into(),
            keygen_algorithm: String::new(),
            secret: String::new(),
            previous_secret: None,
            previous_secret_expires_at: None,
            retry_schedule: "[]".into(),
            failing_since: None,
            created_at: 0,
            updated_at: 0,
        })
    }

    fn tenant(id: &str) -> Arc<tenant::Model> {
        Arc::new(tenant::Model {
            id: id.into(),
            name: id.into(),
            signing_key: String::new(),
            public_key: String::new(),
            created_at: 0,
        })
    }

    fn loaded(version: i64, endpoints: &[(&str, &str)]) -> Loaded {
        Loaded {
            version,
            endpoints: endpoints
                .iter()
                .map(|(id, t)| (id.to_string(), endpoint(id, t)))
                .collect(),
            tenants: endpoints
                .iter()
                .map(|(_, t)| (t.to_string(), tenant(t)))
                .collect(),
        }
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_empty_copy_holds_nothing() {
        assert!(!AttemptCopy::default().holds(&[]));
    }

    #[test]
    fn loads_at_one_version_add_up() {
        let mut copy = AttemptCopy::default();
        copy.absorb(&loaded(3, &[("ep_a", "tn_1")]));
        copy.absorb(&loaded(3, &[("ep_b", "tn_2")]));
        assert!(copy.holds(&ids(&["ep_a", "ep_b"])));
        let got = copy.get(3, &ids(&["ep_b"])).expect("held at version 3");
        assert_eq!(got.endpoints.keys().collect::<Vec<_>>(), ["ep_b"]);
        assert_eq!(got.tenants.keys().collect::<Vec<_>>(), ["tn_2"]);
        assert!(copy.get(3, &ids(&["ep_b", "ep_gone"])).is_none());
        assert!(copy.get(4, &ids(&["ep_b"])).is_none(), "not at version 4");
    }

    #[test]
    fn a_load_at_another_version_replaces_the_copy() {
        let mut copy = AttemptCopy::default();
        copy.absorb(&loaded(3, &[("ep_a", "tn_1")]));
        copy.absorb(&loaded(4, &[("ep_b", "tn_1")]));
        assert!(copy.holds(&ids(&["ep_b"])));
        assert!(!copy.holds(&ids(&["ep_a"])), "ep_a was read at version 3");
        assert!(copy.get(4, &ids(&["ep_b"])).is_some());
    }
}
