//! [`Secret`]: a configured string that is never printed. It is the one piece of vocabulary
//! every layer that holds a credential shares (`[security]`, `[discovery] zk_auth`, the
//! RabbitMQ management password), so it lives at the bottom, below the configuration that
//! collects those sections.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string: never printed by `Debug`/`Display` (shows `Secret(<redacted>)`), overwritten
/// with zeros when dropped.
///
/// `Clone` stays: [`Config`](crate::config::Config) is cloned into the cluster roles, and the HTTP API keeps its own
/// copy of the bearer token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl zeroize::ZeroizeOnDrop for Secret {}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret's text; call only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no value is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(<unset>)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}
