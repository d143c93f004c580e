//! Event type patterns, shared by endpoints, tails and listings: an exact dotted name
//! (`license.created`), `*` for everything, or a prefix wildcard (`license.*`,
//! `license.usage.*`) that matches every name below that prefix.

use crate::{
    catalog::catalog,
    error::{Error, Result},
};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    All,
    Exact(String),
    /// The prefix including its trailing dot (`license.`).
    Prefix(String),
}

impl Pattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Exact(exact) => exact == name,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

/// A validated set of patterns; empty matches everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    patterns: Vec<Pattern>,
}

/// Most patterns one filter may hold.
pub const MAX_PATTERNS: usize = 200;

impl Filter {
    /// Validates `patterns` (the request field `field`): each must name a catalog
    /// event or match at least one, so that typos are refused rather than silently
    /// matching nothing.
    pub fn parse(field: &str, patterns: &[String]) -> Result<Filter> {
        if patterns.len() > MAX_PATTERNS {
            return Err(Error::invalid(
                field,
                format!("at most {MAX_PATTERNS} patterns are allowed"),
            ));
        }
        let mut parsed = Vec::with_capacity(patterns.len());
        for (i, raw) in patterns.iter().enumerate() {
            let pattern =
                parse_one(raw).map_err(|msg| Error::invalid(format!("{field}[{i}]"), msg))?;
            if !parsed.contains(&pattern) {
                parsed.push(pattern);
            }
        }
        Ok(Filter { patterns: parsed })
    }

    /// A stored filter: its patterns were validated when saved, but one may have stopped
    /// parsing (a type removed from the catalog). Keeps the valid ones; `None` when none is
    /// left, so such an endpoint matches nothing rather than everything.
    pub fn stored(patterns: &[String]) -> Option<Filter> {
        if let Ok(filter) = Filter::parse("filters", patterns) {
            return Some(filter);
        }
        let valid: Vec<Pattern> = patterns.iter().filter_map(|p| parse_one(p).ok()).collect();
        (!valid.is_empty()).then_some(Filter { patterns: valid })
    }

    /// Matches every event.
    pub fn all() -> Filter {
        Filter::default()
    }

    pub fn matches(&self, name: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(name))
    }

    pub fn matches_everything(&self) -> bool {
        self.patterns.is_empty() || self.patterns.contains(&Pattern::All)
    }

    /// The catalog names this filter matches, or `None` when it matches everything
    /// (so queries can use `IN (...)` instead of filtering rows afterwards).
    pub fn names(&self) -> Option<Vec<&'static str>> {
        if self.matches_everything() {
            return None;
        }
        Some(
            catalog()
                .all()
                .iter()
                .filter(|t| self.matches(&t.name))
                .map(|t| t.name.as_str())
                .collect(),
        )
    }
}

fn parse_one(raw: &str) -> std::result::Result<Pattern, String> {
    let quoted = crate::ids::truncate(raw, 80);
    if raw == "*" {
        return Ok(Pattern::All);
    }
    if let Some(prefix) = raw.strip_suffix(".*") {
        if prefix.is_empty() || prefix.contains('*') {
            return Err(format!("'{quoted}' is not a valid pattern"));
        }
        let prefix = format!("{prefix}.");
        if !catalog().all().iter().any(|t| t.name.starts_with(&prefix)) {
            return Err(format!("'{quoted}' matches no event type"));
        }
        return Ok(Pattern::Prefix(prefix));
    }
    if raw.contains('*') {
        return Err(format!(
            "'{quoted}' is not a valid pattern (use '*', an event name, or a prefix such as 'license.*')"
        ));
    }
    if catalog().by_name(raw).is_none() {
        return Err(format!("unknown event type '{quoted}'"));
    }
    Ok(Pattern::Exact(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> Result<Filter> {
        let owned: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        Filter::parse("filters", &owned)
    }

    #[test]
    fn matching() {
        let f = filter(&["license.usage.*", "machine.created"]).unwrap();
        assert!(f.matches("license.usage.reset"));
        assert!(!f.matches("license.updated"));
        assert!(f.matches("machine.created"));
        assert!(!f.matches("machine.deleted"));
        assert!(filter(&[]).unwrap().matches("user.updated"));
        assert!(filter(&["*"]).unwrap().matches("user.updated"));
        let lic = filter(&["license.*"]).unwrap();
        assert!(lic.matches("license.check-in-required-soon"));
        assert!(!lic.matches("machine.created"));
        assert_eq!(lic.names().unwrap().len(), 25);
        assert!(filter(&["*"]).unwrap().names().is_none());
    }

    #[test]
    fn stored_filters_drop_what_no_longer_parses() {
        let stored =
            |p: &[&str]| Filter::stored(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let f = stored(&["gone.event", "machine.created"]).unwrap();
        assert!(f.matches("machine.created"));
        assert!(!f.matches("license.created"));
        assert!(stored(&["gone.event"]).is_none());
    }

    #[test]
    fn refusals_name_the_item() {
        for bad in [
            "licence.*",
            "license.created.x",
            "lic*",
            "*.created",
            ".*",
            "license",
        ] {
            let err = filter(&["*", bad]).unwrap_err().to_string();
            assert!(err.starts_with("filters[1]: "), "{bad}: {err}");
        }
    }
}
