//! Publishing: request validation (`validate`) and the group-commit writer (`writer`)
//! that stores events with their deliveries and then feeds live tails.

pub mod validate;
pub mod writer;

pub use validate::{validate, validate_keeping_payload};
pub use writer::Writer;
