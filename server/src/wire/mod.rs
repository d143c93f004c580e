//! Messages encoded by hand where encoding them through prost's generated types costs
//! more than the work they carry.
//!
//! Protobuf encodes an embedded message exactly like a `bytes` field holding that
//! message's encoding, so a message can carry an already encoded part and copy it to the
//! wire as it is. `build.rs` maps the two responses below to these types (`extern_path`),
//! so the generated clients and servers use them; a client decodes them as usual, and the
//! pre-encoded form exists only on the server side.
//!
//! - [`subscribe`]: a live event is encoded once for all its tails.
//! - [`publish`]: a publish's answer carries the event with its payload encoded as a
//!   `Struct` straight from the publisher's JSON ([`structs`]), without building the
//!   `Struct` tree that prost would then walk again for every enclosing length.

pub mod publish;
pub mod structs;
pub mod subscribe;

use bytes::{Bytes, BytesMut};
use prost::{Message, encoding};

pub use publish::PublishResponse;
pub use subscribe::{SubscribeResponse, subscribe_response};

use crate::{convert, proto, store::entities::event};

/// Field number of `Event.payload` in `proto/herald/v1/events.proto`.
const EVENT_PAYLOAD: u32 = 8;

/// The encoding of `herald.v1.Event` for `m`, its payload encoded straight from the stored
/// JSON (as [`convert::event`] gives it, in one pass and without the `Struct` tree).
pub fn encode_event(m: &event::Model) -> Bytes {
    match serde_json::from_str::<serde_json::Value>(&m.payload) {
        Ok(serde_json::Value::Object(map)) => {
            encode_event_with_payload(&convert::event_without_payload(m), &structs::encode(&map))
        }
        // Not an object (never stored by a publish): as the message would have it.
        _ => convert::event(m).encode_to_vec().into(),
    }
}

/// The encoding of `event` (whose `payload` is unset) with `payload`, the encoding of a
/// `google.protobuf.Struct`, as its payload (an embedded message is encoded as a `bytes`
/// field holding its encoding).
pub fn encode_event_with_payload(event: &proto::Event, payload: &Bytes) -> Bytes {
    debug_assert!(event.payload.is_none());
    let len = event.encoded_len() + encoding::bytes::encoded_len(EVENT_PAYLOAD, payload);
    let mut buf = BytesMut::with_capacity(len);
    event.encode(&mut buf).expect("a BytesMut grows as needed");
    encoding::bytes::encode(EVENT_PAYLOAD, payload, &mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(payload: &str) -> event::Model {
        event::Model {
            seq: 42,
            id: "evt_1".into(),
            tenant_id: "acme".into(),
            event_type: "license.created".into(),
            environment: "sandbox".into(),
            occurred_at: 1_700_000_000_000_000,
            received_at: 1_700_000_000_500_000,
            payload: payload.into(),
            idempotency_key: Some("k-1".into()),
        }
    }

    #[test]
    fn an_event_encoded_by_hand_decodes_as_the_generated_message() {
        let m = model(
            r#"{"data":{"id":"lic-1","type":"licenses","attributes":{"n":5,"f":1.5,"ok":false,"none":null,"l":[1,"a",[],{}],"":"empty key","s":""}},"meta":{}}"#,
        );
        let decoded = proto::Event::decode(encode_event(&m)).unwrap();
        assert_eq!(decoded, convert::event(&m));
        assert!(decoded.payload.is_some());
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_encoded_as_before() {
        let m = model("[1, 2]");
        assert_eq!(encode_event(&m), convert::event(&m).encode_to_vec());
    }
}
