//! What makes two backend connections interchangeable: the [`PoolKey`].
//!
//! Two connections may serve each other's requests only when they go to the same server,
//! speak the same protocol and were set up with the same TLS parameters (SNI, ALPN,
//! verification, client certificate) — pingora's reuse hash, HAProxy's connection hash.
//! The pool keeps one set of idle/safe lists per key. [`KeyTable`] gives each key a dense
//! index, the [`ServerId`] the rest of this crate (lists, published counts, takeover
//! messages) is indexed by; the engine builds the table once from the configuration, in
//! the same order on every shard, so an index means the same key everywhere.

use std::collections::HashMap;

use crate::ServerId;

/// The protocol spoken on a backend connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Proto {
    /// HTTP/1.1: one request at a time; a connection is checked out whole.
    Http1,
    /// HTTP/2: many streams at once; a connection with free streams is shared (HAProxy's
    /// `avail` list) and is never taken over while it has open streams.
    Http2,
}

/// The identity of a class of interchangeable backend connections.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PoolKey {
    /// The configured server (its index in the engine's server table).
    pub server: u32,
    /// The protocol on the connection.
    pub proto: Proto,
    /// A digest of the TLS parameters the connection was made with (SNI, ALPN, roots,
    /// client certificate); `None` for plaintext.
    pub tls: Option<u64>,
}

/// Dense indices for pool keys, in the order they were first seen.
#[derive(Clone, Debug, Default)]
pub struct KeyTable {
    keys: Vec<PoolKey>,
    index: HashMap<PoolKey, ServerId>,
}

impl KeyTable {
    /// An empty table.
    pub fn new() -> Self {
        KeyTable::default()
    }

    /// The index of `key`, adding it if new.
    pub fn intern(&mut self, key: PoolKey) -> ServerId {
        if let Some(id) = self.index.get(&key) {
            return *id;
        }
        let id = ServerId(self.keys.len() as u32);
        self.keys.push(key.clone());
        self.index.insert(key, id);
        id
    }

    /// The index of `key`, if known.
    pub fn get(&self, key: &PoolKey) -> Option<ServerId> {
        self.index.get(key).copied()
    }

    /// The key behind an index.
    pub fn key(&self, id: ServerId) -> Option<&PoolKey> {
        self.keys.get(id.index())
    }

    /// How many keys (the `n_servers` an [`IdlePool`](crate::IdlePool) is built with).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differing_in_any_part_get_their_own_index() {
        let mut t = KeyTable::new();
        let plain = PoolKey {
            server: 0,
            proto: Proto::Http1,
            tls: None,
        };
        let a = t.intern(plain.clone());
        assert_eq!(t.intern(plain.clone()), a, "same key, same index");
        let h2 = t.intern(PoolKey {
            proto: Proto::Http2,
            ..plain.clone()
        });
        let tls = t.intern(PoolKey {
            tls: Some(7),
            ..plain.clone()
        });
        let other = t.intern(PoolKey {
            server: 1,
            ..plain.clone()
        });
        let ids = [a, h2, tls, other];
        for (i, x) in ids.iter().enumerate() {
            assert_eq!(x.index(), i, "dense, in order of first sight");
        }
        assert_eq!(t.len(), 4);
        assert_eq!(t.key(tls).and_then(|k| k.tls), Some(7));
        assert_eq!(t.get(&plain), Some(a));
    }
}
