//! `PublishResponse`, written by hand so that its event can be one encoded beforehand
//! (see [`super::encode_event_with_payload`]): the publish's payload goes from the
//! publisher's JSON to the wire without a `Struct` tree in between.
//!
//! For clients it is the usual message; the bytes form is only ever built by the server
//! ([`PublishResponse::encoded`]) and never produced by decoding.

use bytes::{BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{self, DecodeContext, WireType, bool, message, skip_field, uint32},
};

use crate::proto;

// Field numbers of `PublishResponse` in `proto/herald/v1/events.proto`.
const EVENT: u32 = 1;
const DUPLICATE: u32 = 2;
const DELIVERIES: u32 = 3;

/// The answer to one publish. Shaped as prost would generate it.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct PublishResponse {
    /// The stored event (the original one, for a duplicate).
    pub event: Option<proto::Event>,
    /// True when the idempotency key matched an earlier event and nothing new was stored.
    pub duplicate: bool,
    /// How many webhook deliveries were queued for the event.
    pub deliveries: u32,
    /// The event already encoded as `herald.v1.Event`; when set, it is what goes on the
    /// wire instead of `event`.
    encoded_event: Option<Bytes>,
}

impl PublishResponse {
    pub fn new(event: proto::Event, duplicate: bool, deliveries: u32) -> Self {
        PublishResponse {
            event: Some(event),
            duplicate,
            deliveries,
            encoded_event: None,
        }
    }

    /// An answer whose event is given as the encoding of a `herald.v1.Event`.
    pub fn encoded(event: Bytes, duplicate: bool, deliveries: u32) -> Self {
        PublishResponse {
            event: None,
            duplicate,
            deliveries,
            encoded_event: Some(event),
        }
    }
}

impl Message for PublishResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(event) = &self.encoded_event {
            encoding::bytes::encode(EVENT, event, buf);
        } else if let Some(event) = &self.event {
            message::encode(EVENT, event, buf);
        }
        if self.duplicate {
            bool::encode(DUPLICATE, &self.duplicate, buf);
        }
        if self.deliveries != 0 {
            uint32::encode(DELIVERIES, &self.deliveries, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            EVENT => message::merge(
                wire_type,
                self.event.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            DUPLICATE => bool::merge(wire_type, &mut self.duplicate, buf, ctx),
            DELIVERIES => uint32::merge(wire_type, &mut self.deliveries, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let event = match (&self.encoded_event, &self.event) {
            (Some(event), _) => encoding::bytes::encoded_len(EVENT, event),
            (None, Some(event)) => message::encoded_len(EVENT, event),
            (None, None) => 0,
        };
        let duplicate = if self.duplicate {
            bool::encoded_len(DUPLICATE, &self.duplicate)
        } else {
            0
        };
        let deliveries = if self.deliveries != 0 {
            uint32::encoded_len(DELIVERIES, &self.deliveries)
        } else {
            0
        };
        event + duplicate + deliveries
    }

    fn clear(&mut self) {
        *self = PublishResponse::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode_event_with_payload;

    fn event() -> proto::Event {
        proto::Event {
            id: "evt_1".into(),
            type_name: "license.created".into(),
            payload_json: r#"{"data":{"id":"l"}}"#.into(),
            cursor: "c".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_encoded_answer_decodes_as_the_plain_one() {
        let payload = serde_json::json!({"data": {"id": "l"}});
        let serde_json::Value::Object(map) = &payload else {
            unreachable!()
        };
        let with_payload = proto::Event {
            payload: crate::json::json_to_struct(&payload),
            ..event()
        };
        let plain = PublishResponse::new(with_payload, false, 3);
        let encoded = PublishResponse::encoded(
            encode_event_with_payload(&event(), &crate::wire::structs::encode(map)),
            false,
            3,
        );
        let bytes = encoded.encode_to_vec();
        assert_eq!(bytes.len(), encoded.encoded_len());
        assert_eq!(PublishResponse::decode(bytes.as_slice()).unwrap(), plain);
        let plain_bytes = plain.encode_to_vec();
        assert_eq!(plain_bytes.len(), plain.encoded_len());
        assert_eq!(
            PublishResponse::decode(plain_bytes.as_slice()).unwrap(),
            plain
        );
    }

    #[test]
    fn defaults_are_left_out_and_unknown_fields_skipped() {
        let empty = PublishResponse::default();
        assert!(empty.encode_to_vec().is_empty());
        let dup = PublishResponse::new(event(), true, 0);
        let mut bytes = dup.encode_to_vec();
        bytes.extend_from_slice(&[0x48, 0x01]); // field 9, varint 1: a newer server's
        assert_eq!(PublishResponse::decode(bytes.as_slice()).unwrap(), dup);
    }
}
