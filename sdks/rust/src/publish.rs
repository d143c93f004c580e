//! Publishing, typed by the catalog: an event names its type by the `EventType` enum (or a
//! [`catalog`](crate::catalog) constant), so a misspelt type does not compile, and its
//! payload is any `Serialize` value, sent as JSON text so numbers keep their exact form.

use std::time::SystemTime;

use serde::Serialize;

use crate::{
    Client,
    catalog::EventTypeInfo,
    client::MAX_MESSAGE_BYTES,
    error::{Error, Result},
    proto::{
        EventType, PayloadShape, PublishBatchRequest, PublishRequest, PublishResponse,
        event_service_client::EventServiceClient,
    },
};

/// An event to publish. Build one with [`NewEvent::new`] (any payload) or
/// [`NewEvent::resource`] (the catalog's JSON:API shape around your attributes).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    request: PublishRequest,
}

impl NewEvent {
    /// An event of `event_type` whose payload is `payload` serialised to JSON: a JSON:API
    /// document `{"data": …, "meta": …}` whose `data` has the catalog's resource type.
    pub fn new(event_type: impl Into<EventType>, payload: &impl Serialize) -> Result<NewEvent> {
        let payload_json = serde_json::to_string(payload)
            .map_err(|e| Error::invalid("payload", format!("cannot be serialised: {e}")))?;
        Ok(NewEvent::from_json(event_type, payload_json))
    }

    /// An event whose payload is already JSON text (sent as is).
    pub fn from_json(
        event_type: impl Into<EventType>,
        payload_json: impl Into<String>,
    ) -> NewEvent {
        let event_type: EventType = event_type.into();
        NewEvent {
            request: PublishRequest {
                r#type: event_type as i32,
                payload_json: payload_json.into(),
                ..PublishRequest::default()
            },
        }
    }

    /// An event about one resource: the payload is `{"data": {"id", "type", "attributes"}}`
    /// with the `type` the catalog names for `event_type` (and `data` a one-element list for
    /// the `*.attached` / `*.detached` events).
    pub fn resource(
        event_type: EventTypeInfo,
        id: impl Into<String>,
        attributes: &impl Serialize,
    ) -> Result<NewEvent> {
        let attributes = serde_json::to_value(attributes)
            .map_err(|e| Error::invalid("attributes", format!("cannot be serialised: {e}")))?;
        let object = serde_json::json!({
            "id": id.into(),
            "type": event_type.resource_type,
            "attributes": attributes,
        });
        let data = if event_type.shape == PayloadShape::List {
            serde_json::Value::Array(vec![object])
        } else {
            object
        };
        NewEvent::new(event_type, &serde_json::json!({ "data": data }))
    }

    /// Only endpoints and tails of this environment receive the event.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.request.environment = environment.into();
        self
    }

    /// A repeat publish with the same key within 24 hours returns the original event; it
    /// also makes the publish safe to retry, so the client retries it on `UNAVAILABLE`.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.request.idempotency_key = key.into();
        self
    }

    /// When the event happened (default: when Herald receives it).
    pub fn occurred_at(mut self, at: SystemTime) -> Self {
        self.request.occurred_at = Some(at.into());
        self
    }

    /// The tenant (with an admin key; default: the client's).
    pub fn tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.request.tenant_id = tenant_id.into();
        self
    }

    /// The protobuf request.
    pub fn into_request(self) -> PublishRequest {
        self.request
    }
}

impl From<NewEvent> for PublishRequest {
    fn from(event: NewEvent) -> PublishRequest {
        event.request
    }
}

impl From<EventTypeInfo> for EventType {
    fn from(info: EventTypeInfo) -> EventType {
        info.event_type
    }
}

impl From<&EventTypeInfo> for EventType {
    fn from(info: &EventTypeInfo) -> EventType {
        info.event_type
    }
}

impl Client {
    /// Stores one event and queues its webhooks. Retried on `UNAVAILABLE` only when it
    /// carries an idempotency key.
    pub async fn publish(&self, event: impl Into<PublishRequest>) -> Result<PublishResponse> {
        let mut request = event.into();
        self.fill_tenant(&mut request.tenant_id);
        let idempotent = !request.idempotency_key.is_empty();
        self.unary(idempotent, request, |channel, request| async move {
            EventServiceClient::new(channel)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
                .publish(request)
                .await
        })
        .await
    }

    /// Stores up to 1,000 events atomically (all or none) and returns their results in
    /// order. Retried on `UNAVAILABLE` only when every event carries an idempotency key.
    pub async fn publish_batch<E: Into<PublishRequest>>(
        &self,
        events: impl IntoIterator<Item = E>,
    ) -> Result<Vec<PublishResponse>> {
        let mut events: Vec<PublishRequest> = events.into_iter().map(Into::into).collect();
        for event in &mut events {
            self.fill_tenant(&mut event.tenant_id);
        }
        let idempotent = events.iter().all(|e| !e.idempotency_key.is_empty());
        let request = PublishBatchRequest { events };
        let response = self
            .unary(idempotent, request, |channel, request| async move {
                EventServiceClient::new(channel)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .publish_batch(request)
                    .await
            })
            .await?;
        Ok(response.results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn resource_payloads_follow_the_catalog() {
        let event = NewEvent::resource(
            catalog::LICENSE_CREATED,
            "lic_1",
            &serde_json::json!({ "name": "Pro" }),
        )
        .unwrap()
        .idempotency_key("k1")
        .environment("prod")
        .into_request();
        assert_eq!(event.r#type, EventType::LicenseCreated as i32);
        assert_eq!(event.idempotency_key, "k1");
        assert_eq!(event.environment, "prod");
        let payload: serde_json::Value = serde_json::from_str(&event.payload_json).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({"data": {"id": "lic_1", "type": "licenses", "attributes": {"name": "Pro"}}})
        );

        let attached = NewEvent::resource(
            catalog::LICENSE_USERS_ATTACHED,
            "lu_1",
            &serde_json::json!({}),
        )
        .unwrap()
        .into_request();
        let payload: serde_json::Value = serde_json::from_str(&attached.payload_json).unwrap();
        assert_eq!(payload["data"][0]["type"], "license-users");
    }
}
