//! Integration tests: the real server, in-process on 127.0.0.1:0, over gRPC, against
//! SQLite and PostgreSQL. One test binary (see `helpers` for `spawn_app`).

mod helpers;
mod migrate;
mod receiver;
mod references;

mod attempt_log;
mod claims;
mod cluster;
mod compose;
mod delivery;
mod due_floor;
mod grpcurl;
mod isolation;
mod observability;
mod publish;
mod replicas;
mod resilience;
mod scale_out;
mod smoke;
mod subscribe;
