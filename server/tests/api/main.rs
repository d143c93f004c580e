//! Integration tests: the real server, in-process on 127.0.0.1:0, over gRPC, against
//! SQLite and PostgreSQL. One test binary (see `helpers` for `spawn_app`).

mod helpers;

mod grpcurl;
mod isolation;
mod publish;
mod smoke;
mod subscribe;
