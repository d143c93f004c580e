//! `SubscribeResponse`, written by hand so a live event is encoded once, not once per tail.
//!
//! A live event goes to every tail that wants it: with 1,000 tails, letting tonic encode
//! the message for each would clone and encode the same ~2 KB `Event` (its payload a
//! `Struct` tree) a thousand times. Protobuf encodes an embedded message exactly like a
//! `bytes` field holding that message's encoding, so a response can carry the event's
//! bytes, encoded once by the bus, and copy them to the wire as they are.
//!
//! `build.rs` maps `.herald.v1.SubscribeResponse` to this type (`extern_path`), so the
//! generated client and server both use it. For clients it is the usual message: `kind`
//! holds the decoded event or heartbeat. The bytes form exists only on the server side
//! ([`SubscribeResponse::encoded_event`]) and is never produced by decoding.

use bytes::{BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{self, DecodeContext, WireType, message},
};

use crate::proto;

/// Field numbers of `SubscribeResponse.kind` in `proto/herald/v1/events.proto`.
const EVENT: u32 = 1;
const HEARTBEAT: u32 = 2;

/// A message of the `Subscribe` stream: an event or a heartbeat.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct SubscribeResponse {
    /// What the message carries (decoded form).
    pub kind: Option<subscribe_response::Kind>,
    /// An event already encoded as `herald.v1.Event`; when set, it is what goes on the wire.
    encoded_event: Option<Bytes>,
}

pub mod subscribe_response {
    use crate::proto;

    /// An event or a heartbeat. Shaped as prost would generate it (an unboxed oneof),
    /// so client code reads it like every other message.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, Debug)]
    pub enum Kind {
        /// The next matching event.
        Event(proto::Event),
        /// Nothing new; the stream is alive.
        Heartbeat(proto::Heartbeat),
    }
}

impl SubscribeResponse {
    pub fn new(kind: subscribe_response::Kind) -> Self {
        SubscribeResponse {
            kind: Some(kind),
            encoded_event: None,
        }
    }

    /// A response carrying an event given as the encoding of a `herald.v1.Event`.
    pub fn encoded_event(event: Bytes) -> Self {
        SubscribeResponse {
            kind: None,
            encoded_event: Some(event),
        }
    }
}

impl Message for SubscribeResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        use subscribe_response::Kind;
        if let Some(event) = &self.encoded_event {
            encoding::bytes::encode(EVENT, event, buf);
            return;
        }
        match &self.kind {
            Some(Kind::Event(event)) => message::encode(EVENT, event, buf),
            Some(Kind::Heartbeat(beat)) => message::encode(HEARTBEAT, beat, buf),
            None => {}
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        use subscribe_response::Kind;
        match tag {
            // A oneof member seen again merges into the one already there, as prost does.
            EVENT => {
                let mut event = match self.kind.take() {
                    Some(Kind::Event(event)) => event,
                    _ => proto::Event::default(),
                };
                message::merge(wire_type, &mut event, buf, ctx)?;
                self.kind = Some(Kind::Event(event));
            }
            HEARTBEAT => {
                let mut beat = match self.kind.take() {
                    Some(Kind::Heartbeat(beat)) => beat,
                    _ => proto::Heartbeat::default(),
                };
                message::merge(wire_type, &mut beat, buf, ctx)?;
                self.kind = Some(Kind::Heartbeat(beat));
            }
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx)?,
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        use subscribe_response::Kind;
        if let Some(event) = &self.encoded_event {
            return encoding::bytes::encoded_len(EVENT, event);
        }
        match &self.kind {
            Some(Kind::Event(event)) => message::encoded_len(EVENT, event),
            Some(Kind::Heartbeat(beat)) => message::encoded_len(HEARTBEAT, beat),
            None => 0,
        }
    }

    fn clear(&mut self) {
        self.kind = None;
        self.encoded_event = None;
    }
}

#[cfg(test)]
mod tests {
    use super::{subscribe_response::Kind, *};

    fn event() -> proto::Event {
        proto::Event {
            id: "evt_1".into(),
            type_name: "license.created".into(),
            cursor: "c".into(),
            ..Default::default()
        }
    }

    #[test]
    fn pre_encoded_event_is_the_same_bytes_as_the_event_message() {
        let event = event();
        let plain = SubscribeResponse::new(Kind::Event(event.clone())).encode_to_vec();
        let bytes = Bytes::from(event.encode_to_vec());
        let pre = SubscribeResponse::encoded_event(bytes);
        assert_eq!(pre.encode_to_vec(), plain);
        assert_eq!(pre.encoded_len(), plain.len());
        let decoded = SubscribeResponse::decode(plain.as_slice()).unwrap();
        assert_eq!(decoded.kind, Some(Kind::Event(event)));
    }

    #[test]
    fn heartbeats_round_trip_and_unknown_fields_are_skipped() {
        let beat = SubscribeResponse::new(Kind::Heartbeat(proto::Heartbeat { time: None }));
        let mut bytes = beat.encode_to_vec();
        // Field 9, varint 1: a newer server's field this client does not know.
        bytes.extend_from_slice(&[0x48, 0x01]);
        let decoded = SubscribeResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, beat);
    }
}
