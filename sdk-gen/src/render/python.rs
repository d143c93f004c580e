//! `sdks/python/herald_sdk/catalog.py`: one frozen `EventTypeInfo` per event type, plus
//! lookups by name and by enum number. Laid out as `black` would, so linters leave it alone.

use std::fmt::Write;

use super::{GENERATED_BY, describe, one_line, quoted};
use crate::catalog::Entry;

/// The file's contents.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "# {GENERATED_BY}
\"\"\"The event catalog: every event type Herald carries, with the facts its ``event_info``
option gives (dotted name, trigger, payload, JSON:API resource type, shape).\"\"\"

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class EventTypeInfo:
    \"\"\"The facts about one event type, from its ``event_info`` option in ``catalog.proto``.\"\"\"

    #: The ``herald.v1.EventType`` enum number.
    value: int
    #: Canonical dotted name, as sent on the wire (e.g. ``license.created``).
    name: str
    #: When the event is emitted.
    trigger: str
    #: What the payload holds.
    payload: str
    #: JSON:API ``type`` of the resource(s) in the payload's ``data``.
    resource_type: str
    #: ``\"object\"`` (one resource object) or ``\"list\"`` (a list of them).
    shape: str
    #: Other ``data.type`` values the server accepts on publish, for compatibility.
    also_accepts: Tuple[str, ...]
"
    );
    for e in entries {
        let also = match e.also_accepts.as_slice() {
            [] => "()".to_string(),
            [one] => format!("({},)", quoted(one)),
            many => format!(
                "({})",
                many.iter()
                    .map(|s| quoted(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let _ = write!(
            out,
            "

#: ``{name}``: {doc}
{constant} = EventTypeInfo(
    value={number},
    name={name_lit},
    trigger={trigger},
    payload={payload},
    resource_type={resource_type},
    shape={shape},
    also_accepts={also},
)
",
            name = one_line(&e.name),
            doc = describe(e),
            constant = e.constant,
            number = e.number,
            name_lit = quoted(&e.name),
            trigger = quoted(&e.trigger),
            payload = quoted(&e.payload),
            resource_type = quoted(&e.resource_type),
            shape = if e.list { "\"list\"" } else { "\"object\"" },
        );
    }
    out.push_str(
        "\n#: Every event type, in catalog (enum) order.\nALL: Tuple[EventTypeInfo, ...] = (\n",
    );
    for e in entries {
        let _ = writeln!(out, "    {},", e.constant);
    }
    out.push_str(
        ")

_BY_NAME = {info.name: info for info in ALL}
_BY_VALUE = {info.value: info for info in ALL}


def by_name(name: str) -> Optional[EventTypeInfo]:
    \"\"\"The event type with this dotted name (``license.created``), or ``None``.\"\"\"
    return _BY_NAME.get(name)


def by_value(value: int) -> Optional[EventTypeInfo]:
    \"\"\"The event type with this ``herald.v1.EventType`` number, or ``None``.\"\"\"
    return _BY_VALUE.get(value)
",
    );
    out
}
