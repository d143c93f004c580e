//! What a webhook request carries: the body (`render`) and its signatures (`keygen`,
//! `standard`). Pure functions: no I/O, so they are unit-tested and benchmarked alone.
//! Wire facts: Keygen's `webhook-events` document and `Keygen-Signature`, and Standard
//! Webhooks' `webhook-*` headers.

pub mod keygen;
pub mod render;
pub mod standard;
