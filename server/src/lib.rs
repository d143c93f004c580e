//! Herald: stores the platform's events and delivers them to gRPC tails and (with the
//! delivery worker) signed webhooks. See ARCHITECTURE.md for the map of modules.

pub mod api;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod convert;
pub mod delivery;
pub mod egress;
pub mod error;
pub mod filter;
pub mod ids;
pub mod json;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod publish;
pub mod queue;
pub mod redis_conn;
pub mod relay;
pub mod request_id;
pub mod roles;
pub mod server;
pub mod state;
pub mod store;
pub mod tail;
pub mod time;
pub mod webhook;
pub mod wire;

/// Generated protobuf types and tonic stubs for `herald.v1`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("herald.v1");

    pub use crate::wire::{PublishResponse, SubscribeResponse, subscribe_response};

    /// The encoded descriptors of `proto/`, custom options included.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("herald_descriptor");
}
