//! Outbound HTTP for webhooks: a reqwest client that refuses internal destinations at
//! connection time (`ssrf`), does not follow redirects, bounds the whole exchange by a
//! timeout and reads at most a capped response body (`client`).

pub mod client;
pub mod ssrf;
