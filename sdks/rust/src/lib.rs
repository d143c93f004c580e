//! The Rust client of [Herald](https://example.invalid/herald), the event delivery service:
//!
//! - a [`Client`] built from an address and an API key (sent on every call), with TLS,
//!   deadlines, and retries of idempotent calls on `UNAVAILABLE`;
//! - publishing typed by the event [`catalog`] ([`NewEvent`], [`Client::publish`],
//!   [`Client::publish_batch`]);
//! - tails as a `Stream` that resumes from its last cursor after a dropped connection
//!   ([`Client::subscribe`], [`Tail`]);
//! - endpoint, delivery, tenant and key management ([`Client::endpoints`],
//!   [`Client::deliveries`], [`Client::admin`]), taking the [`proto`] messages;
//! - webhook verification for receivers, Keygen and Standard Webhooks schemes
//!   ([`WebhookVerifier`], [`verify_webhook`]).
//!
//! ```no_run
//! use herald_sdk::{Client, NewEvent, catalog};
//!
//! # async fn run() -> herald_sdk::Result<()> {
//! let client = Client::connect("http://127.0.0.1:50051", "hrk_...").await?;
//! let event = NewEvent::resource(catalog::LICENSE_CREATED, "lic_1", &serde_json::json!({"name": "Pro"}))?;
//! let published = client.publish(event).await?;
//! println!("stored {} ({} webhooks queued)", published.event.unwrap().id, published.deliveries);
//! # Ok(()) }
//! ```

/// The protobuf messages and tonic stubs of `herald.v1`, generated at build time from the
/// same `.proto` files as the server.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("herald.v1");
}

#[rustfmt::skip]
pub mod catalog;
mod client;
mod error;
mod publish;
mod services;
mod subscribe;
pub mod webhook;

pub use client::{Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, RetryPolicy};
pub use error::{Error, Result};
pub use proto::{Event, EventType, PublishResponse};
pub use publish::NewEvent;
pub use services::{Admin, Deliveries, Endpoints};
pub use subscribe::{DEFAULT_IDLE_TIMEOUT, Subscription, Tail};
#[cfg(feature = "tls")]
pub use tonic::transport::{Certificate, ClientTlsConfig, Identity};
pub use webhook::{
    Scheme, VerifyError, WebhookEvent, WebhookRequest, WebhookVerifier, verify_webhook,
};
