//! `sdks/rust/src/catalog.rs`: one `EventTypeInfo` constant per event type, typed by the
//! tonic stubs' `EventType` enum. Written in rustfmt's own layout, so `cargo fmt --check`
//! passes on the generated file as it is.

use std::fmt::Write;

use super::{GENERATED_BY, describe, one_line};
use crate::catalog::Entry;

/// The file's contents.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "// {GENERATED_BY}

//! The event catalog: every event type Herald carries, with the facts its `event_info`
//! option gives (dotted name, trigger, payload, JSON:API resource type, shape).

use crate::proto::{{EventType, PayloadShape}};

/// The facts about one event type, from its `event_info` option in `catalog.proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventTypeInfo {{
    /// The enum value.
    pub event_type: EventType,
    /// Canonical dotted name, as sent on the wire (e.g. `license.created`).
    pub name: &'static str,
    /// When the event is emitted.
    pub trigger: &'static str,
    /// What the payload holds.
    pub payload: &'static str,
    /// JSON:API `type` of the resource(s) in the payload's `data`.
    pub resource_type: &'static str,
    /// Whether `data` is one resource object or a list of them.
    pub shape: PayloadShape,
    /// Other `data.type` values the server accepts on publish, for compatibility.
    pub also_accepts: &'static [&'static str],
}}
"
    );
    for e in entries {
        let also: Vec<String> = e.also_accepts.iter().map(|s| rust_str(s)).collect();
        let _ = write!(
            out,
            "
/// `{name}`: {doc}
pub const {constant}: EventTypeInfo = EventTypeInfo {{
    event_type: EventType::{variant},
    name: {name_lit},
    trigger: {trigger},
    payload: {payload},
    resource_type: {resource_type},
    shape: PayloadShape::{shape},
    also_accepts: &[{also}],
}};
",
            name = one_line(&e.name),
            doc = describe(e),
            constant = e.constant,
            variant = e.rust_variant(),
            name_lit = rust_str(&e.name),
            trigger = rust_str(&e.trigger),
            payload = rust_str(&e.payload),
            resource_type = rust_str(&e.resource_type),
            shape = if e.list { "List" } else { "Object" },
            also = also.join(", "),
        );
    }
    out.push_str(
        "\n/// Every event type, in catalog (enum) order.\npub const ALL: &[EventTypeInfo] = &[\n",
    );
    for e in entries {
        let _ = writeln!(out, "    {},", e.constant);
    }
    out.push_str(
        "];

/// The event type with this dotted name (`license.created`).
pub fn by_name(name: &str) -> Option<&'static EventTypeInfo> {
    ALL.iter().find(|info| info.name == name)
}

/// The catalog entry of an enum value (`None` for `EventType::Unspecified`).
pub fn by_type(event_type: EventType) -> Option<&'static EventTypeInfo> {
    ALL.iter().find(|info| info.event_type == event_type)
}
",
    );
    out
}

/// A Rust string literal: `Debug` of a `str` escapes exactly what the literal syntax needs.
fn rust_str(s: &str) -> String {
    format!("{s:?}")
}
