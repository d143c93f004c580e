//! Typed, prefixed, time-sortable ids (`evt_01J...`), in the manner of Stripe and Svix:
//! the prefix tells a human what an id is, and a wrong kind of id is refused by name.

use ulid::Ulid;

use crate::error::{Error, Result};

/// The kinds of id Herald issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Event,
    Endpoint,
    Tenant,
    ApiKey,
    Delivery,
    Attempt,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Event => "evt",
            Kind::Endpoint => "ep",
            Kind::Tenant => "ten",
            Kind::ApiKey => "key",
            Kind::Delivery => "dlv",
            Kind::Attempt => "att",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Event => "an event",
            Kind::Endpoint => "an endpoint",
            Kind::Tenant => "a tenant",
            Kind::ApiKey => "an API key",
            Kind::Delivery => "a delivery",
            Kind::Attempt => "an attempt",
        }
    }
}

/// One monotonic generator per process: ids made later in this process sort after ids
/// made earlier, even within the same millisecond (listings are "oldest first" by id).
static GENERATOR: std::sync::Mutex<ulid::Generator> = std::sync::Mutex::new(ulid::Generator::new());

/// A new id of `kind`.
pub fn new(kind: Kind) -> String {
    let ulid = {
        let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        generator
            .generate()
            // Only after 2^80 ids in one millisecond.
            .unwrap_or_else(|_| Ulid::new())
    };
    format!("{}_{}", kind.prefix(), ulid)
}

/// Checks that `value` (the request field `field`) is an id of `kind`.
pub fn parse<'a>(kind: Kind, field: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    let ok = value
        .strip_prefix(kind.prefix())
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|ulid| Ulid::from_string(ulid).is_ok());
    if ok {
        Ok(value)
    } else {
        Err(Error::invalid(
            field,
            format!(
                "'{}' is not {} id (expected {}_ followed by 26 characters)",
                truncate(value, 80),
                kind.noun(),
                kind.prefix()
            ),
        ))
    }
}

/// Shortens user input quoted back in error messages.
pub fn truncate(value: &str, max: usize) -> String {
    if value.chars().count() <= max {
        value.to_string()
    } else {
        let cut: String = value.chars().take(max).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_parse_and_sort() {
        let a = new(Kind::Event);
        let b = new(Kind::Event);
        assert!(a < b, "same millisecond, still ordered");
        assert!(parse(Kind::Event, "id", &a).is_ok());
        let err = parse(Kind::Endpoint, "id", &a).unwrap_err();
        assert_eq!(err.to_string().split(':').next(), Some("id"));
        assert!(parse(Kind::Event, "id", "evt_nope").is_err());
        assert!(parse(Kind::Event, "id", "").is_err());
    }
}
