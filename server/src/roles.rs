//! Which parts of Herald one process runs, so that the API and the delivery workers can be
//! scaled separately (`herald serve --api`, `herald serve --worker`, `roles` in the
//! configuration).
//!
//! - `api`: the gRPC API and the publish path (writer, live bus and relay, tails). The reconciler
//!   runs too, but only to re-enqueue everything after a queue loss this process noticed.
//! - `worker`: the delivery worker (with its recorder and retry promotion), the reconciler
//!   and retention pruning. A worker-only process still answers gRPC health on its listen
//!   address, so that orchestrators can probe it.
//!
//! Both is the default. A split needs the shared Redis queue: with the in-process queue
//! an API process's deliveries would sit in a queue no worker reads.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The roles of a process; at least one is set once the configuration is validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Roles::ALL
    }
}

impl Roles {
    /// Both roles, the default.
    pub const ALL: Roles = Roles {
        api: true,
        worker: true,
    };

    /// True when this process runs everything.
    pub fn is_all(self) -> bool {
        self == Roles::ALL
    }

    /// Adds one role by name.
    fn add(&mut self, name: &str) -> Result<(), String> {
        match name.trim() {
            "api" => self.api = true,
            "worker" => self.worker = true,
            other => {
                return Err(format!(
                    "roles: unknown role '{other}' (expected api and/or worker)"
                ));
            }
        }
        Ok(())
    }

    /// Parses `api`, `worker` or `api,worker` (the form of `HERALD_ROLES`).
    pub fn parse(text: &str) -> Result<Roles, String> {
        let mut roles = Roles {
            api: false,
            worker: false,
        };
        for name in text.split(',').filter(|n| !n.trim().is_empty()) {
            roles.add(name)?;
        }
        Ok(roles)
    }

    /// Checks the roles against the rest of the configuration; `shared_queue` is whether
    /// the delivery queue is Redis. The error names the key and the flags.
    pub fn check(self, shared_queue: bool) -> Result<(), String> {
        if !self.api && !self.worker {
            return Err("roles (--api/--worker) must include api, worker or both".into());
        }
        if !self.is_all() && !shared_queue {
            return Err(format!(
                "roles (--api/--worker) = {self} needs redis_url: without Redis the delivery \
                 queue lives inside one process, so an api process's deliveries would never \
                 reach a worker process; run both roles in one process or set redis_url"
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.api, self.worker) {
            (true, true) => "api,worker",
            (true, false) => "api",
            (false, true) => "worker",
            (false, false) => "none",
        })
    }
}

impl Serialize for Roles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Roles {
    /// Accepts `"api,worker"` (environment) or `["api", "worker"]` (TOML).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Roles;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"api\", \"worker\", \"api,worker\" or a list of those")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Roles, E> {
                Roles::parse(v).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Roles, A::Error> {
                let mut roles = Roles {
                    api: false,
                    worker: false,
                };
                while let Some(name) = seq.next_element::<String>()? {
                    roles.add(&name).map_err(serde::de::Error::custom)?;
                }
                Ok(roles)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_lists() {
        assert_eq!(Roles::parse("api,worker").unwrap(), Roles::ALL);
        assert_eq!(
            Roles::parse(" worker ").unwrap(),
            Roles {
                api: false,
                worker: true
            }
        );
        let err = Roles::parse("api,web").unwrap_err();
        assert!(err.contains("roles") && err.contains("web"), "{err}");
        assert!(Roles::parse("").unwrap().check(true).is_err(), "none");
    }

    #[test]
    fn a_split_needs_the_shared_queue() {
        let api = Roles::parse("api").unwrap();
        assert!(api.check(true).is_ok());
        let err = api.check(false).unwrap_err();
        assert!(err.contains("redis_url") && err.contains("--api"), "{err}");
        assert!(Roles::ALL.check(false).is_ok());
    }
}
