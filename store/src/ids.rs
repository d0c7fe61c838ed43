//! Identifiers. All are UUIDv7, so they sort by creation time and make ordered sled keys.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The all-zero id: stands in where the id is not known yet.
            pub const NIL: Self = $name(Uuid::nil());

            /// A new, time-ordered id.
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            /// The 16 big-endian bytes used as a sled key.
            pub fn as_key(&self) -> [u8; 16] {
                *self.0.as_bytes()
            }

            pub fn from_key(bytes: &[u8]) -> Option<Self> {
                Uuid::from_slice(bytes).ok().map($name)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

id_type!(
    /// Identifies a job.
    JobId
);
id_type!(
    /// Identifies a stored API key (not the secret itself).
    KeyId
);
id_type!(
    /// Identifies one event, globally.
    EventId
);
id_type!(
    /// Identifies one memory entry.
    MemoryId
);
id_type!(
    /// Identifies a session (its key, e.g. `rest:deploy-bot`, is the name users see).
    SessionId
);
id_type!(
    /// Identifies one run of a session's agent loop.
    RunId
);
id_type!(
    /// Identifies an approval request.
    ApprovalId
);
