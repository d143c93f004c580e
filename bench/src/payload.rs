//! The events the harness publishes, and how an arrival is traced back to its event.
//!
//! Every published event is a realistic Keygen `licenses` JSON:API document of about 1 KB
//! whose resource id (`data.id`, repeated in its `links`) is a UUID that *is* the
//! benchmark's own sequence number:
//!
//! ```text
//! 5f3a9c01-0000-4000-8000-00000000002a
//! └─ run ─┘└─── fixed ────┘└── seq ───┘
//! ```
//!
//! The first 8 hex digits are random per run, so stale deliveries of an earlier run against
//! the same Herald are not counted; the last 12 are the sequence number in hex. A receiver
//! finds the run's 24-byte prefix with one `memmem` search and reads the 12 digits after
//! it. That works on every body Herald produces without parsing JSON: the Keygen format
//! carries the payload as an escaped JSON *string* (`\"id\":\"5f3a…\"`) and the Standard
//! format as a plain object, and neither escaping touches hex digits and dashes. Herald's
//! own ids (`webhook-id`, `dlv_…`) identify a delivery, not an event, and are not known to
//! the harness before they arrive, so they cannot be used for that.

use memchr::memmem;

/// The dotted type of every event in the single-type scenarios.
pub const DEFAULT_TYPE: &str = "license.created";

/// Placeholder for the resource id in the template (never appears in real data).
const ID_SLOT: &str = "@@ID@@";

/// The run's marker: the fixed part of every resource id of this run.
#[derive(Clone)]
pub struct Marker {
    prefix: String,
    finder: memmem::Finder<'static>,
}

impl Marker {
    /// A marker for run `run` (any 32-bit number, random in practice).
    pub fn new(run: u32) -> Marker {
        let prefix = format!("{run:08x}-0000-4000-8000-");
        let finder = memmem::Finder::new(prefix.as_bytes()).into_owned();
        Marker { prefix, finder }
    }

    /// The resource id of event `seq`.
    pub fn id(&self, seq: u64) -> String {
        format!("{}{seq:012x}", self.prefix)
    }

    /// The sequence number of the first resource id of this run in `body`, if any.
    pub fn find(&self, body: &[u8]) -> Option<u64> {
        let at = self.finder.find(body)? + self.prefix.len();
        let digits = body.get(at..at + 12)?;
        digits.iter().try_fold(0u64, |acc, &b| {
            let d = (b as char).to_digit(16)?;
            Some(acc << 4 | u64::from(d))
        })
    }
}

/// Builds payloads from one template: a copy and a few small writes per event.
pub struct Payloads {
    marker: Marker,
    /// The template split at each id slot.
    parts: Vec<String>,
}

impl Payloads {
    pub fn new(marker: Marker) -> Payloads {
        let parts = license_template()
            .split(ID_SLOT)
            .map(str::to_string)
            .collect();
        Payloads { marker, parts }
    }

    /// The JSON:API document of event `seq`.
    pub fn payload(&self, seq: u64) -> String {
        let id = self.marker.id(seq);
        let mut out = String::with_capacity(self.parts.iter().map(String::len).sum::<usize>() + 80);
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push_str(&id);
            }
            out.push_str(part);
        }
        out
    }

    /// What Herald would POST for event `seq` in the Keygen format (the default): the
    /// `webhook-events` envelope with the payload as a JSON string. Used by `--floor`.
    pub fn keygen_body(&self, seq: u64, event_type: &str, url: &str) -> Vec<u8> {
        let body = serde_json::json!({
            "data": {
                "id": format!("dlv_{}", ulid::Ulid::new()),
                "type": "webhook-events",
                "attributes": {
                    "endpoint": url,
                    "payload": self.payload(seq),
                    "event": event_type,
                    "status": "DELIVERING",
                    "lastResponseCode": null,
                    "lastResponseBody": null,
                    "created": "2026-06-30T14:51:47.123Z",
                    "updated": "2026-06-30T14:51:47.123Z"
                },
                "relationships": {
                    "account": { "data": { "type": "accounts", "id": "bench" } }
                }
            },
            "meta": { "idempotencyToken": format!("msg_{}", ulid::Ulid::new()) }
        });
        serde_json::to_vec(&body).expect("a JSON value always serialises")
    }
}

/// A `licenses` resource as Keygen sends it in `license.created`, with typical attributes
/// and relationships; `@@ID@@` stands for the license id.
fn license_template() -> String {
    let doc = serde_json::json!({
        "data": {
            "id": ID_SLOT,
            "type": "licenses",
            "attributes": {
                "name": "Pro (annual)",
                "key": "C1B6DE-39A6E3-DE1A4A-24C1F3-A9EC0C-V3",
                "expiry": "2027-06-30T14:51:47.000Z",
                "status": "ACTIVE",
                "uses": 0,
                "suspended": false,
                "scheme": null,
                "encrypted": false,
                "strict": true,
                "floating": true,
                "protected": true,
                "version": "1.4.2",
                "maxMachines": 5,
                "maxUsers": null,
                "requireHeartbeat": false,
                "lastValidated": null,
                "permissions": ["license.read", "license.validate", "machine.create"],
                "metadata": { "customerId": "cus_Q2mL8vXzK1", "plan": "pro-annual" },
                "created": "2026-06-30T14:51:47.000Z",
                "updated": "2026-06-30T14:51:47.000Z"
            },
            "relationships": {
                "account": { "data": { "type": "accounts", "id": "8c4b4f2e-1d1e-4a4b-9d6e-3f1a2b3c4d5e" } },
                "product": { "data": { "type": "products", "id": "f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b" } },
                "policy": { "data": { "type": "policies", "id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d" } },
                "owner": { "data": null },
                "machines": { "meta": { "cores": 0, "count": 0 } }
            },
            "links": { "self": format!("/v1/accounts/8c4b4f2e-1d1e-4a4b-9d6e-3f1a2b3c4d5e/licenses/{ID_SLOT}") }
        },
        "meta": {}
    });
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_through_both_formats() {
        let marker = Marker::new(0x5f3a_9c01);
        let payloads = Payloads::new(marker.clone());
        let doc = payloads.payload(42);
        assert_eq!(marker.find(doc.as_bytes()), Some(42));
        // As Keygen embeds it: a JSON string, quotes escaped.
        let keygen = payloads.keygen_body(7, DEFAULT_TYPE, "http://x/e/0");
        assert_eq!(marker.find(&keygen), Some(7));
        // Another run's marker does not match.
        assert_eq!(Marker::new(1).find(doc.as_bytes()), None);
    }

    #[test]
    fn payload_is_a_valid_realistic_document() {
        let marker = Marker::new(9);
        let payloads = Payloads::new(marker.clone());
        let doc = payloads.payload(u64::from(u32::MAX));
        assert!(
            (900..1200).contains(&doc.len()),
            "payload is {} bytes",
            doc.len()
        );
        let json: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(json["data"]["type"], "licenses");
        assert_eq!(json["data"]["id"], marker.id(u64::from(u32::MAX)));
        assert!(!doc.contains(ID_SLOT));
    }

    #[test]
    fn herald_accepts_the_payload() {
        let payloads = Payloads::new(Marker::new(3));
        let req = herald::proto::PublishRequest {
            type_name: DEFAULT_TYPE.into(),
            payload_json: payloads.payload(1),
            ..Default::default()
        };
        herald::publish::validate::validate("t", req, 256 * 1024).expect("valid publish");
    }
}
