//! `sdks/typescript/src/catalog.ts`: one `EventTypeInfo` constant per event type, the
//! `EventTypeName` union of every dotted name, and lookups by name and by enum number.

use std::fmt::Write;

use super::{GENERATED_BY, describe, one_line, quoted};
use crate::catalog::Entry;

/// The file's contents.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "// {GENERATED_BY}

/**
 * The event catalog: every event type Herald carries, with the facts its `event_info`
 * option gives (dotted name, trigger, payload, JSON:API resource type, shape).
 */

/** Every dotted event type name. */
export type EventTypeName =
"
    );
    for (i, e) in entries.iter().enumerate() {
        let end = if i + 1 == entries.len() { ";" } else { "" };
        let _ = writeln!(out, "  | {}{end}", quoted(&e.name));
    }
    out.push_str(
        "
/** The facts about one event type, from its `event_info` option in `catalog.proto`. */
export interface EventTypeInfo {
  /** The `herald.v1.EventType` enum number. */
  readonly value: number;
  /** Canonical dotted name, as sent on the wire (e.g. `license.created`). */
  readonly name: EventTypeName;
  /** When the event is emitted. */
  readonly trigger: string;
  /** What the payload holds. */
  readonly payload: string;
  /** JSON:API `type` of the resource(s) in the payload's `data`. */
  readonly resourceType: string;
  /** Whether `data` is one resource object or a list of them. */
  readonly shape: \"object\" | \"list\";
  /** Other `data.type` values the server accepts on publish, for compatibility. */
  readonly alsoAccepts: readonly string[];
}
",
    );
    for e in entries {
        let also: Vec<String> = e.also_accepts.iter().map(|s| quoted(s)).collect();
        let _ = write!(
            out,
            "
/** `{name}`: {doc} */
export const {constant}: EventTypeInfo = {{
  value: {number},
  name: {name_lit},
  trigger: {trigger},
  payload: {payload},
  resourceType: {resource_type},
  shape: {shape},
  alsoAccepts: [{also}],
}};
",
            name = comment_safe(&one_line(&e.name)),
            doc = comment_safe(&describe(e)),
            constant = e.constant,
            number = e.number,
            name_lit = quoted(&e.name),
            trigger = quoted(&e.trigger),
            payload = quoted(&e.payload),
            resource_type = quoted(&e.resource_type),
            shape = if e.list { "\"list\"" } else { "\"object\"" },
            also = also.join(", "),
        );
    }
    out.push_str("\n/** Every event type, in catalog (enum) order. */\nexport const ALL: readonly EventTypeInfo[] = [\n");
    for e in entries {
        let _ = writeln!(out, "  {},", e.constant);
    }
    out.push_str(
        "];

const BY_NAME: ReadonlyMap<string, EventTypeInfo> = new Map(ALL.map((info) => [info.name, info]));
const BY_VALUE: ReadonlyMap<number, EventTypeInfo> = new Map(ALL.map((info) => [info.value, info]));

/** The event type with this dotted name (`license.created`), or `undefined`. */
export function byName(name: string): EventTypeInfo | undefined {
  return BY_NAME.get(name);
}

/** The event type with this `herald.v1.EventType` number, or `undefined`. */
export function byValue(value: number): EventTypeInfo | undefined {
  return BY_VALUE.get(value);
}
",
    );
    out
}

/// Text that cannot end the `/** */` comment it sits in.
fn comment_safe(s: &str) -> String {
    s.replace("*/", "*\\/")
}
