//! The one error type of the client calls. A server answer keeps its `tonic::Status`, so
//! callers can branch on the gRPC code (`NOT_FOUND`, `INVALID_ARGUMENT` naming the field...).
//! No variant ever carries the API key.

/// What can go wrong calling Herald.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Herald (or the connection to it) answered with this gRPC status.
    #[error("{:?}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The client could not be set up (a bad address, TLS settings) or could not connect.
    #[error("cannot connect to Herald: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// An argument was refused before anything was sent.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The argument, e.g. `api_key` or `payload`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl Error {
    /// The gRPC code of a status error (`None` for errors raised before a call).
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status(status) => Some(status.code()),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
