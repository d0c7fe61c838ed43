//! Errors of the store.

use std::path::PathBuf;

use crate::ids::JobId;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data directory {path} is in use by another rauskuclaw process; stop it or use --data-dir"
    )]
    Locked { path: PathBuf },
    #[error("storage error: {0}")]
    Io(String),
    #[error("corrupt record in tree `{tree}` at key {key}: {reason}")]
    Corrupt {
        tree: String,
        key: String,
        reason: String,
    },
    #[error("job {0} not found")]
    JobNotFound(JobId),
    #[error("{0}")]
    Invalid(String),
    #[error("the store is shut down")]
    Closed,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => e.into(),
        }
    }
}
