//! gRPC service implementations: authenticate, validate, call the store or the
//! writer, convert. Business rules live in the modules they call.

pub mod admin;
pub mod deliveries;
pub mod endpoints;
pub mod events;
