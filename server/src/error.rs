//! Herald's one error type, and the one place it becomes a `tonic::Status`.
//!
//! Handlers return `Result<T, Error>`; messages name the field and the problem, so a
//! grpcurl user can fix the call without reading code. Internal causes are logged
//! here and never sent to the caller.

use tonic::{Code, Status};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is wrong; `field` is its path in the request (`events[2].payload`).
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(sea_orm::DbErr),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field of an `InvalidArgument` (`payload` → `events[3].payload`).
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Error::InvalidArgument { field, message } => Error::InvalidArgument {
                field: format!("{prefix}.{field}"),
                message,
            },
            other => other,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Database(e) if is_connection_error(e) => Code::Unavailable,
            Error::Database(_) | Error::Internal(_) => Code::Internal,
        }
    }

    /// What the caller is told: internal details stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            Error::Database(e) if is_connection_error(e) => "database unavailable".into(),
            Error::Database(_) | Error::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

/// Every database error becomes an `Error` here, so this is where they are counted.
impl From<sea_orm::DbErr> for Error {
    fn from(e: sea_orm::DbErr) -> Self {
        crate::metrics::database_error(is_connection_error(&e));
        Error::Database(e)
    }
}

fn is_connection_error(e: &sea_orm::DbErr) -> bool {
    matches!(
        e,
        sea_orm::DbErr::Conn(_) | sea_orm::DbErr::ConnectionAcquire(_)
    )
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        if matches!(err, Error::Database(_) | Error::Internal(_)) {
            tracing::error!(error = %err, "request failed");
        }
        Status::new(err.code(), err.public_message())
    }
}
