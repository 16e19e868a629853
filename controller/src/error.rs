//! Controller errors and the one mapping to gRPC status codes.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("{what} `{name}` not found")]
    NotFound { what: &'static str, name: String },
    /// A name that is none of the known ones, with the closest known one if there is one.
    #[error("no {what} `{name}`{hint}")]
    Unknown {
        what: &'static str,
        name: String,
        hint: String,
    },
    /// The request is valid but the object is not in a state that allows it (approve a
    /// baseline that is not frozen).
    #[error("{0}")]
    Precondition(String),
    #[error("permission denied: {0}")]
    Denied(String),
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The write would compile a policy bundle over the transport limit.
    #[error("{0}")]
    TooLarge(String),
    /// Over a rate limit (enrollment attempts): retry later.
    #[error("{0}")]
    RateLimited(String),
    /// The store cannot be reached now (its database restarting or failing over): the
    /// request may be tried again.
    #[error("the store is unavailable, try again: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(e.into())
    }
}

impl Error {
    /// `name` is not among `known` (a typo, or a name that does not exist): [`Error::Unknown`]
    /// with "did you mean" where one is close (edit distance 2 at most).
    pub fn unknown<S: AsRef<str>>(what: &'static str, name: &str, known: &[S]) -> Error {
        let known: Vec<&str> = known.iter().map(AsRef::as_ref).collect();
        let hint = match wardgate_policy::diag::closest(name, &known) {
            Some(c) => format!(" (did you mean `{c}`?)"),
            None => String::new(),
        };
        Error::Unknown {
            what,
            name: name.to_string(),
            hint,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::Invalid(_) => tonic::Status::invalid_argument(msg),
            // What gRPC itself answers for a message over its size limit.
            Error::TooLarge(_) | Error::RateLimited(_) => tonic::Status::resource_exhausted(msg),
            Error::NotFound { .. } | Error::Unknown { .. } => tonic::Status::not_found(msg),
            Error::Precondition(_) => tonic::Status::failed_precondition(msg),
            Error::Denied(_) => tonic::Status::permission_denied(msg),
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(msg),
            // The operator must find the row: say which, as data loss (not a retryable fault).
            Error::Store(crate::store::StoreError::Corrupt { .. }) => {
                tracing::error!(error = %msg, "corrupt store row");
                tonic::Status::data_loss(msg)
            }
            // A database going away mid-request (a failover): whether the write took is
            // unknown to the client, which tries again (a write is idempotent in effect: the
            // same mode again makes no generation).
            Error::Unavailable(_) => {
                tracing::warn!(error = %msg, "request failed: store unavailable");
                tonic::Status::unavailable(msg)
            }
            Error::Store(crate::store::StoreError::Postgres(ref p))
                if crate::store::connection_lost(p) =>
            {
                tracing::warn!(error = %msg, "request failed: the database connection was lost");
                tonic::Status::unavailable(
                    "the store's database connection was lost (a failover?): try again",
                )
            }
            Error::Store(_) | Error::Internal(_) => {
                tracing::error!(error = %msg, "request failed");
                tonic::Status::internal("internal error (see controller log)")
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_store_is_unavailable_and_says_try_again() {
        let s = tonic::Status::from(Error::Unavailable(
            "connecting to PostgreSQL at 192.0.2.1:5432: timed out".into(),
        ));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("try again"), "{}", s.message());
        let s = tonic::Status::from(Error::Internal("a bug".into()));
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(!s.message().contains("a bug"), "internals stay in the log");
    }
}
