//! What each scenario creates and expects: endpoints with their filters, the event types
//! published, and which (endpoint, event) pairs must arrive.
//!
//! Expectations are computed by the harness's own filter matcher ([`matches`]), not by
//! Herald's, so a server bug in filter matching shows up as lost or unexpected deliveries
//! (a unit test checks that both agree on every pattern used here). The same numbers are
//! checked against `PublishResponse.deliveries` on every publish.

use clap::ValueEnum;
use serde::Serialize;

use crate::payload::DEFAULT_TYPE;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// (a) One endpoint receives every event.
    One,
    /// (b) Every event goes to each of `--endpoints` endpoints (default 10).
    Fanout,
    /// (c) `--endpoints` endpoints (default 1,000) with different filters; a known subset
    /// matches the published types.
    Filters,
    /// (d) One healthy endpoint and one that never answers (Herald's timeout cuts it).
    Hanging,
    /// (e) `--tails` Subscribe tails, no endpoints: publish → tail latency.
    Tails,
    /// (f) `--backlog` deliveries queued while the receiver is down, then drained.
    Backlog,
}

/// How an endpoint's receiver behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers 204 at once (and 503 while a backlog gate is closed).
    Healthy,
    /// Never answers until the run ends.
    Hanging,
}

#[derive(Clone, Debug)]
pub struct EndpointSpec {
    pub behaviour: Behaviour,
    pub filters: Vec<String>,
    /// Empty: the server's schedule.
    pub retry_schedule_secs: Vec<u32>,
    /// Index in `Plan::types` → whether this endpoint receives that type.
    pub accepts: Vec<bool>,
}

impl EndpointSpec {
    /// The receiver path of endpoint `index` (`/e/3`, `/h/1`).
    pub fn path(&self, index: usize) -> String {
        match self.behaviour {
            Behaviour::Healthy => format!("/e/{index}"),
            Behaviour::Hanging => format!("/h/{index}"),
        }
    }

    /// Whether the harness waits for this endpoint's deliveries.
    pub fn measured(&self) -> bool {
        self.behaviour == Behaviour::Healthy && self.accepts.iter().any(|a| *a)
    }
}

/// A scenario made concrete for `events` events.
#[derive(Clone, Debug)]
pub struct Plan {
    pub scenario: Scenario,
    pub events: u64,
    /// Event `seq` has type `types[seq % types.len()]`.
    pub types: Vec<&'static str>,
    pub endpoints: Vec<EndpointSpec>,
}

/// The types published by the `filters` scenario (all carry a `licenses` resource).
const FILTER_TYPES: [&str; 4] = [
    "license.created",
    "license.updated",
    "license.renewed",
    "license.suspended",
];

/// Filters that match at least one of `FILTER_TYPES`.
const MATCHING: [&[&str]; 6] = [
    &["*"],
    &["license.*"],
    &["license.created"],
    &["license.created", "license.updated"],
    &["license.renewed", "machine.created"],
    &["license.suspended", "license.usage.*"],
];

/// Filters that match none of `FILTER_TYPES`: what most endpoints of a real account
/// subscribe to.
const NON_MATCHING: [&[&str]; 12] = [
    &["machine.created"],
    &["machine.*"],
    &["user.*", "token.generated"],
    &["policy.updated"],
    &["license.deleted"],
    &["license.expired", "license.revoked"],
    &["product.*"],
    &["license.usage.*"],
    &["license.entitlements.*"],
    &["group.*", "artifact.created"],
    &["release.*"],
    &["process.heartbeat.*"],
];

/// In the `filters` scenario, every `MATCH_EVERY`-th endpoint matches.
pub const MATCH_EVERY: usize = 50;

/// Whether `pattern` (`*`, exact, or `prefix.*`) matches the event type `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => prefix.ends_with('.') && name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Plan {
    /// `endpoints` overrides the endpoint count of `fanout` and `filters`.
    pub fn new(scenario: Scenario, events: u64, endpoints: Option<usize>) -> Plan {
        let types: Vec<&'static str> = match scenario {
            Scenario::Filters => FILTER_TYPES.to_vec(),
            _ => vec![DEFAULT_TYPE],
        };
        let spec = |behaviour, filters: &[&str], retry: Vec<u32>| {
            let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
            let accepts = types
                .iter()
                .map(|t| filters.is_empty() || filters.iter().any(|f| matches(f, t)))
                .collect();
            EndpointSpec {
                behaviour,
                filters,
                retry_schedule_secs: retry,
                accepts,
            }
        };
        let healthy = |filters: &[&str]| spec(Behaviour::Healthy, filters, Vec::new());
        let endpoints = match scenario {
            Scenario::One => vec![healthy(&[DEFAULT_TYPE])],
            Scenario::Fanout => (0..endpoints.unwrap_or(10))
                .map(|_| healthy(&[DEFAULT_TYPE]))
                .collect(),
            Scenario::Filters => (0..endpoints.unwrap_or(1000))
                .map(|i| {
                    if i % MATCH_EVERY == 0 {
                        healthy(MATCHING[(i / MATCH_EVERY) % MATCHING.len()])
                    } else {
                        healthy(NON_MATCHING[i % NON_MATCHING.len()])
                    }
                })
                .collect(),
            Scenario::Hanging => vec![
                healthy(&[DEFAULT_TYPE]),
                spec(Behaviour::Hanging, &[DEFAULT_TYPE], Vec::new()),
            ],
            Scenario::Tails => Vec::new(),
            // Retry-After replaces the delay but never adds attempts, so the schedule
            // must have a next entry; its own delays are never used when all goes well.
            Scenario::Backlog => vec![spec(Behaviour::Healthy, &[DEFAULT_TYPE], vec![300; 3])],
        };
        Plan {
            scenario,
            events,
            types,
            endpoints,
        }
    }

    pub fn type_index(&self, seq: u64) -> usize {
        (seq % self.types.len() as u64) as usize
    }

    pub fn event_type(&self, seq: u64) -> &'static str {
        self.types[self.type_index(seq)]
    }

    /// Deliveries Herald should queue for event `seq` (hanging endpoints included).
    pub fn deliveries_for(&self, seq: u64) -> u32 {
        let t = self.type_index(seq);
        self.endpoints.iter().filter(|e| e.accepts[t]).count() as u32
    }

    /// Deliveries the harness waits for when every event is published.
    pub fn expected_deliveries(&self) -> u64 {
        let ntypes = self.types.len() as u64;
        let per_type: Vec<u64> = (0..ntypes)
            .map(|t| self.events / ntypes + u64::from(t < self.events % ntypes))
            .collect();
        self.endpoints
            .iter()
            .filter(|e| e.measured())
            .map(|e| {
                e.accepts
                    .iter()
                    .zip(&per_type)
                    .filter(|(a, _)| **a)
                    .map(|(_, n)| n)
                    .sum::<u64>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_matcher_agrees_with_heralds() {
        let plan = Plan::new(Scenario::Filters, 10, None);
        for (i, endpoint) in plan.endpoints.iter().enumerate() {
            let filter = herald::filter::Filter::parse("filters", &endpoint.filters)
                .unwrap_or_else(|e| panic!("endpoint {i}: {e:?}"));
            for (t, name) in plan.types.iter().enumerate() {
                assert_eq!(filter.matches(name), endpoint.accepts[t], "{i} {name}");
            }
        }
    }

    #[test]
    fn published_types_carry_licenses() {
        for scenario in [Scenario::One, Scenario::Filters] {
            for name in Plan::new(scenario, 1, None).types {
                let info = herald::catalog::catalog().by_name(name).unwrap();
                assert!(
                    info.accepts_resource_type("licenses") && !info.is_list(),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn expected_counts() {
        assert_eq!(
            Plan::new(Scenario::One, 200, None).expected_deliveries(),
            200
        );
        assert_eq!(
            Plan::new(Scenario::Fanout, 200, None).expected_deliveries(),
            2000
        );
        assert_eq!(
            Plan::new(Scenario::Hanging, 200, None).expected_deliveries(),
            200
        );
        assert_eq!(Plan::new(Scenario::Hanging, 200, None).deliveries_for(0), 2);
        assert_eq!(
            Plan::new(Scenario::Tails, 200, None).expected_deliveries(),
            0
        );

        // 1,000 endpoints: 20 match, cycling through MATCHING, which accepts
        // 4, 4, 1, 2, 1, 1 of the 4 types.
        let plan = Plan::new(Scenario::Filters, 1000, None);
        assert_eq!(plan.endpoints.iter().filter(|e| e.measured()).count(), 20);
        let by_seq: u64 = (0..plan.events)
            .map(|s| u64::from(plan.deliveries_for(s)))
            .sum();
        assert_eq!(plan.expected_deliveries(), by_seq);
        // 20 endpoints = MATCHING ×3 + its first two; 250 events of each type.
        let types_accepted = 3 * (4 + 4 + 1 + 2 + 1 + 1) + (4 + 4);
        assert_eq!(by_seq, types_accepted * 250);
        // An uneven split of events over types is counted exactly too.
        let plan = Plan::new(Scenario::Filters, 1003, None);
        let by_seq: u64 = (0..plan.events)
            .map(|s| u64::from(plan.deliveries_for(s)))
            .sum();
        assert_eq!(plan.expected_deliveries(), by_seq);
    }

    #[test]
    fn patterns() {
        assert!(matches("*", "license.created"));
        assert!(matches("license.*", "license.usage.reset"));
        assert!(!matches("license.*", "licenses.x"));
        assert!(matches("license.created", "license.created"));
        assert!(!matches("license.created", "license.created.x"));
    }
}
