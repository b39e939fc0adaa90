//! Pool configuration and the reuse policy.
//!
//! This module owns the words a user configures (`ServerId`, [`ReuseMode`], [`PoolConfig`])
//! and the one pure function that turns a reuse mode and "is this the first request of the
//! client session?" into the set of pooled connections a request may use ([`Allowed`]).
//! It holds no state and performs no I/O; both the idle pool and the takeover protocol
//! consult [`Allowed`] so a connection taken over from another shard obeys the same rule
//! as a local checkout.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Index of a [`PoolKey`](crate::PoolKey) in the engine's [`KeyTable`](crate::KeyTable): what the
/// pool's lists, published counts and takeover messages are indexed by. While every
/// configured server has exactly one key (HTTP/1.1, plaintext), it is also the server's index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ServerId(pub u32);

impl ServerId {
    /// The table index as a `usize`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// HAProxy's `http-reuse`: which pooled connections a request may be sent over.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum ReuseMode {
    /// Never share a backend connection between client sessions.
    Never,
    /// The first request of a session uses its own connection; later ones may use any
    /// idle or safe connection (default).
    #[default]
    Safe,
    /// The first request of a session may use a *safe* connection (one that already
    /// carried a second request, so the server is known to keep connections alive);
    /// later ones any.
    Aggressive,
    /// Any request may use any pooled connection.
    Always,
}

impl ReuseMode {
    /// All modes, in the order they are documented.
    pub const ALL: [ReuseMode; 4] = [
        ReuseMode::Never,
        ReuseMode::Safe,
        ReuseMode::Aggressive,
        ReuseMode::Always,
    ];

    /// The name used on the command line and in the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReuseMode::Never => "never",
            ReuseMode::Safe => "safe",
            ReuseMode::Aggressive => "aggressive",
            ReuseMode::Always => "always",
        }
    }

    /// Which pooled connections a request may use under this mode.
    ///
    /// `first_request` is true for the first request of a client session (HAProxy's meaning).
    pub fn allowed(self, first_request: bool) -> Allowed {
        match (self, first_request) {
            (ReuseMode::Never, _) => Allowed::Nothing,
            (ReuseMode::Safe, true) => Allowed::Nothing,
            (ReuseMode::Safe, false) => Allowed::Any,
            (ReuseMode::Aggressive, true) => Allowed::SafeOnly,
            (ReuseMode::Aggressive, false) => Allowed::Any,
            (ReuseMode::Always, _) => Allowed::Any,
        }
    }
}

impl fmt::Display for ReuseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reuse mode string that is not one of the four known names.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown reuse mode '{0}' (expected one of: never, safe, aggressive, always)")]
pub struct ReuseModeError(pub String);

impl FromStr for ReuseMode {
    type Err = ReuseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        ReuseMode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| ReuseModeError(s.to_string()))
    }
}

/// Which pooled connections a request may use: the result of applying a [`ReuseMode`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Allowed {
    /// No pooled connection: the request must use a fresh (or its session's private) one.
    Nothing,
    /// Only connections that were already reused at least once.
    SafeOnly,
    /// Idle or safe connections.
    Any,
}

impl Allowed {
    /// True when a connection of `class` may be used.
    pub fn permits(self, class: crate::ConnClass) -> bool {
        match self {
            Allowed::Nothing => false,
            Allowed::SafeOnly => class == crate::ConnClass::Safe,
            Allowed::Any => true,
        }
    }
}

/// Per-shard pool limits. One value is shared by all servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Reuse mode (`--reuse`, default `safe`).
    pub reuse: ReuseMode,
    /// Most idle + safe connections kept per server on one shard; 0 keeps nothing idle.
    pub max_idle_per_server: usize,
    /// Most requests one backend connection carries; `None` is unlimited.
    pub max_reuse: Option<u32>,
    /// HAProxy's `pool-low-conn`: no takeover while the server's idle count summed over
    /// all shards is below this; the shard connects anew instead.
    pub low_idle: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            reuse: ReuseMode::Safe,
            max_idle_per_server: 64,
            max_reuse: None,
            low_idle: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_mode_parses_and_displays() {
        for m in ReuseMode::ALL {
            assert_eq!(m.to_string().parse::<ReuseMode>(), Ok(m));
        }
        assert_eq!("  Always ".parse::<ReuseMode>(), Ok(ReuseMode::Always));
        let err = "sometimes".parse::<ReuseMode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown reuse mode 'sometimes' (expected one of: never, safe, aggressive, always)"
        );
        assert_eq!(ReuseMode::default(), ReuseMode::Safe);
    }

    #[test]
    fn allowed_follows_haproxy_meaning() {
        use Allowed::*;
        let table = [
            (ReuseMode::Never, Nothing, Nothing),
            (ReuseMode::Safe, Nothing, Any),
            (ReuseMode::Aggressive, SafeOnly, Any),
            (ReuseMode::Always, Any, Any),
        ];
        for (mode, first, later) in table {
            assert_eq!(mode.allowed(true), first, "{mode} first request");
            assert_eq!(mode.allowed(false), later, "{mode} later request");
        }
        assert!(SafeOnly.permits(crate::ConnClass::Safe));
        assert!(!SafeOnly.permits(crate::ConnClass::Idle));
        assert!(!Nothing.permits(crate::ConnClass::Safe));
        assert!(Any.permits(crate::ConnClass::Idle));
    }
}
