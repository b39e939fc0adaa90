//! Server choice within one backend: the three `balance` algorithms, as plain code that
//! takes the servers' weights, usability and loads in and gives a server index out.
//!
//! - **Smooth weighted round-robin** ([`SmoothWrr`], nginx's `ngx_http_upstream_get_peer`):
//!   every pick adds each usable server's weight to its current value, takes the server
//!   with the largest, and subtracts the total from it; weights 5,1,1 give
//!   `a a b a c a a`, never `a a a a a b c`.
//! - **Least outstanding requests, power of two choices** ([`p2c`]): two different usable
//!   servers at random, the one with fewer outstanding requests per unit of weight wins.
//!   The load of a server is this shard's own count plus what the other shards published
//!   (relaxed atomics, each written by its shard only: no lock, a stale figure only makes
//!   one choice less good).
//! - **Consistent hashing** ([`Maglev`], Google's Maglev, NSDI 2016): a lookup table of
//!   a prime size filled from each server's own permutation, so that adding or removing
//!   one of N servers moves about 1/N of the keys; weights fill proportionally more
//!   entries. A key whose server is unusable walks to the next entries, so only the keys
//!   of that server move.
//!
//! The request key for hashing ([`KeySource`]) is read from the request head only when the
//! backend hashes, and only the part `hash-on` names. Nothing here knows shards, sockets or
//! time; the upstream layer (`mod.rs`) says which servers are usable.

use std::cell::Cell;
use std::net::IpAddr;

use crate::config::values::HashOn;

/// What a request offers as hashing key: its upstream-bound head (HTTP/1.1 form, the
/// request line first), its path and the client's address.
pub struct KeySource<'a> {
    pub head: &'a [u8],
    pub path: &'a [u8],
    pub client: IpAddr,
}

impl KeySource<'_> {
    /// The hash of the key `on` names, or `None` when the request has no such key (then the
    /// backend falls back to round-robin for it).
    pub fn hash(&self, on: &HashOn) -> Option<u64> {
        match on {
            HashOn::ClientIp => Some(match self.client {
                IpAddr::V4(a) => hash64(&a.octets()),
                IpAddr::V6(a) => hash64(&a.octets()),
            }),
            HashOn::Path => {
                let p = self.path;
                let end = p.iter().position(|&c| c == b'?').unwrap_or(p.len());
                Some(hash64(&p[..end]))
            }
            HashOn::Header(name) => header_value(self.head, name.as_bytes()).map(hash64),
            HashOn::Cookie(name) => cookie_value(self.head, name.as_bytes()).map(hash64),
        }
    }
}

/// The value of the first header `name` (ASCII case-insensitive) of an HTTP/1.1 head,
/// OWS trimmed.
pub fn header_value<'h>(head: &'h [u8], name: &'h [u8]) -> Option<&'h [u8]> {
    header_values(head, name).next()
}

fn header_values<'h>(head: &'h [u8], name: &'h [u8]) -> impl Iterator<Item = &'h [u8]> + 'h {
    // Skip the request line; a head ends at the empty line.
    head.split(|&c| c == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .filter_map(move |l| {
            let colon = l.iter().position(|&c| c == b':')?;
            if !l[..colon].eq_ignore_ascii_case(name) {
                return None;
            }
            Some(trim(&l[colon + 1..]))
        })
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'h>(head: &'h [u8], name: &'h [u8]) -> Option<&'h [u8]> {
    for v in header_values(head, b"cookie") {
        for pair in v.split(|&c| c == b';') {
            let pair = trim(pair);
            if let Some(eq) = pair.iter().position(|&c| c == b'=') {
                if &pair[..eq] == name {
                    return Some(&pair[eq + 1..]);
                }
            }
        }
    }
    None
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

/// FNV-1a followed by a 64-bit finaliser (splitmix64): stable across runs, versions and
/// machines, so a key keeps its server across restarts.
pub fn hash64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether a server may get a new request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    /// Up.
    Yes,
    /// Taken out by passive checks (or a failed connect) for a while: used only when no
    /// server of the backend is `Yes`.
    Ejected,
    /// Down by its active check, drained (weight 0) or removed: never chosen.
    No,
}

/// Among `n` servers, the indices of those usable now: the `Yes` ones, else (a backend
/// whose every server was ejected) the `Ejected` ones; empty when none can be chosen.
fn candidates(n: usize, usable: &dyn Fn(usize) -> Usable, out: &mut Vec<usize>) {
    out.clear();
    out.extend((0..n).filter(|&i| usable(i) == Usable::Yes));
    if out.is_empty() {
        out.extend((0..n).filter(|&i| usable(i) == Usable::Ejected));
    }
}

/// One shard's smooth weighted round-robin state for one backend.
#[derive(Debug, Default)]
pub struct SmoothWrr {
    current: Vec<Cell<i64>>,
}

impl SmoothWrr {
    pub fn new(n: usize) -> SmoothWrr {
        SmoothWrr {
            current: (0..n).map(|_| Cell::new(0)).collect(),
        }
    }

    /// The next server of `weights.len()`, or `None` when none is usable.
    ///
    /// The candidates are those [`candidates`] would list (the `Yes` servers, else the
    /// `Ejected` ones), walked in place: this runs once per request, and a candidate list
    /// was a heap allocation per request.
    pub fn pick(&self, weights: &[u32], usable: &dyn Fn(usize) -> Usable) -> Option<usize> {
        let n = weights.len().min(self.current.len());
        // The first pass touches `current` only if it finds a `Yes` server, so a backend
        // whose servers are all ejected is walked again over those, as before.
        self.pick_among(n, weights, |i| usable(i) == Usable::Yes)
            .or_else(|| self.pick_among(n, weights, |i| usable(i) == Usable::Ejected))
    }

    fn pick_among(
        &self,
        n: usize,
        weights: &[u32],
        is_cand: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for i in (0..n).filter(|&i| is_cand(i)) {
            let w = weights[i].max(1) as i64;
            let c = self.current[i].get() + w;
            self.current[i].set(c);
            total += w;
            if best.is_none_or(|b| c > self.current[b].get()) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b].set(self.current[b].get() - total);
        Some(b)
    }
}

/// A small per-shard random source (xorshift64*), for the two random choices.
#[derive(Debug)]
pub struct Rng(Cell<u64>);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(Cell::new(mix(seed.wrapping_add(0x9e37_79b9_7f4a_7c15)) | 1))
    }

    pub fn below(&self, n: usize) -> usize {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % n.max(1)
    }
}

/// Least outstanding requests with two random choices: `load(i)` is server `i`'s
/// outstanding requests over all shards. Weighted: the server with the smaller
/// `(load + 1) / weight` wins.
pub fn p2c(
    weights: &[u32],
    usable: &dyn Fn(usize) -> Usable,
    load: &dyn Fn(usize) -> u64,
    rng: &Rng,
) -> Option<usize> {
    let mut cand = Vec::new();
    candidates(weights.len(), usable, &mut cand);
    match cand.len() {
        0 => None,
        1 => Some(cand[0]),
        n => {
            let a = cand[rng.below(n)];
            let mut b = cand[rng.below(n - 1)];
            if b == a {
                b = cand[n - 1];
            }
            let cost = |i: usize| (load(i) + 1) as u128 * 1000 / weights[i].max(1) as u128;
            Some(if cost(b) < cost(a) { b } else { a })
        }
    }
}

/// A Maglev lookup table over one backend's servers.
#[derive(Debug, Clone)]
pub struct Maglev {
    table: Vec<u32>,
}

/// Table size: a prime well above 100 x the servers of any sane backend.
pub const MAGLEV_SIZE: usize = 65_537;

impl Maglev {
    /// Builds the table for servers named `names` (stable identities: their addresses),
    /// with weights (0: no entries).
    pub fn new(names: &[String], weights: &[u32]) -> Maglev {
        let m = MAGLEV_SIZE as u64;
        let n = names.len();
        let mut table = vec![u32::MAX; MAGLEV_SIZE];
        let live: Vec<usize> = (0..n)
            .filter(|&i| weights.get(i).copied().unwrap_or(1) > 0)
            .collect();
        if live.is_empty() {
            return Maglev { table };
        }
        let perm: Vec<(u64, u64)> = names
            .iter()
            .map(|s| {
                let h = hash64(s.as_bytes());
                let offset = h % m;
                let skip = mix(h ^ 0x5bd1_e995) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let max_w = live.iter().map(|&i| weights[i]).max().unwrap_or(1) as u64;
        let mut next = vec![0u64; n];
        let mut filled = 0usize;
        let mut round: u64 = 0;
        while filled < MAGLEV_SIZE {
            for &i in &live {
                // Weighted: server i takes a turn in w_i of every max_w rounds.
                let w = weights[i] as u64;
                if (round + 1) * w / max_w == round * w / max_w {
                    continue;
                }
                let (offset, skip) = perm[i];
                loop {
                    let c = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[c] == u32::MAX {
                        table[c] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == MAGLEV_SIZE {
                    break;
                }
            }
            round += 1;
        }
        Maglev { table }
    }

    /// The server for `key`; when it is not usable, the next entries' servers, so that only
    /// that server's keys move. `None` when no server is usable.
    pub fn pick(&self, key: u64, n: usize, usable: &dyn Fn(usize) -> Usable) -> Option<usize> {
        let mut cand = Vec::new();
        candidates(n, usable, &mut cand);
        if cand.is_empty() {
            return None;
        }
        let wanted = if cand.iter().any(|&i| usable(i) == Usable::Yes) {
            Usable::Yes
        } else {
            Usable::Ejected
        };
        let start = (key % MAGLEV_SIZE as u64) as usize;
        for k in 0..MAGLEV_SIZE {
            let s = self.table[(start + k) % MAGLEV_SIZE];
            if s != u32::MAX && (s as usize) < n && usable(s as usize) == wanted {
                return Some(s as usize);
            }
        }
        // Usable servers with weight 0 (no entries): any of them.
        Some(cand[(key % cand.len() as u64) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: usize) -> Usable {
        Usable::Yes
    }

    #[test]
    fn smooth_wrr_is_nginx_order_and_exact() {
        let w = SmoothWrr::new(3);
        let picks: Vec<usize> = (0..7).map(|_| w.pick(&[5, 1, 1], &all).unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0], "nginx's smooth order");
        let w = SmoothWrr::new(3);
        let mut n = [0; 3];
        for _ in 0..6000 {
            n[w.pick(&[3, 2, 1], &all).unwrap()] += 1;
        }
        assert_eq!(n, [3000, 2000, 1000]);
    }

    #[test]
    fn smooth_wrr_skips_down_and_drained() {
        let w = SmoothWrr::new(3);
        let usable = |i: usize| if i == 1 { Usable::No } else { Usable::Yes };
        for _ in 0..10 {
            assert_ne!(w.pick(&[1, 1, 1], &usable), Some(1));
        }
        let none = |_: usize| Usable::No;
        assert_eq!(w.pick(&[1, 1, 1], &none), None);
        // Every server ejected: they are still tried rather than nothing.
        let ej = |_: usize| Usable::Ejected;
        assert!(w.pick(&[1, 1, 1], &ej).is_some());
    }

    #[test]
    fn smooth_wrr_prefers_up_over_ejected_and_weights_ejected_ones() {
        // Server 0 ejected, 1 and 2 up: only 1 and 2, in weight order 1:2.
        let w = SmoothWrr::new(3);
        let some_up = |i: usize| if i == 0 { Usable::Ejected } else { Usable::Yes };
        let picks: Vec<_> = (0..6).map(|_| w.pick(&[5, 1, 2], &some_up)).collect();
        assert_eq!(picks.iter().filter(|p| **p == Some(2)).count(), 4);
        assert_eq!(picks.iter().filter(|p| **p == Some(1)).count(), 2);
        // All ejected (2 is down): 0 and 1 by their weights 3:1, exactly.
        let w = SmoothWrr::new(3);
        let ejected = |i: usize| if i == 2 { Usable::No } else { Usable::Ejected };
        let picks: Vec<_> = (0..8).map(|_| w.pick(&[3, 1, 9], &ejected)).collect();
        assert_eq!(picks.iter().filter(|p| **p == Some(0)).count(), 6);
        assert_eq!(picks.iter().filter(|p| **p == Some(1)).count(), 2);
    }

    #[test]
    fn p2c_prefers_the_less_loaded_and_spreads_equal_load() {
        let rng = Rng::new(7);
        let loads = [10u64, 0, 10];
        let mut n = [0; 3];
        for _ in 0..3000 {
            n[p2c(&[1, 1, 1], &all, &|i| loads[i], &rng).unwrap()] += 1;
        }
        // Server 1 wins every draw it is in: 2 of every 3 draws.
        assert!(n[1] > 1800 && n[1] < 2200, "{n:?}");
        let mut n = [0; 4];
        for _ in 0..40_000 {
            n[p2c(&[1, 1, 1, 1], &all, &|_| 0, &rng).unwrap()] += 1;
        }
        for c in n {
            assert!((c as f64 - 10_000.0).abs() < 600.0, "{n:?}");
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:9000", i + 1)).collect()
    }

    #[test]
    fn maglev_spreads_evenly_and_moves_about_one_nth() {
        let t3 = Maglev::new(&names(3), &[1, 1, 1]);
        let t4 = Maglev::new(&names(4), &[1, 1, 1, 1]);
        let mut counts = [0; 4];
        let (mut moved, mut between_old) = (0, 0);
        for k in 0..10_000u64 {
            let h = hash64(format!("user-{k}").as_bytes());
            let a = t3.pick(h, 3, &all).unwrap();
            let b = t4.pick(h, 4, &all).unwrap();
            counts[b] += 1;
            if a != b {
                moved += 1;
                if b != 3 {
                    between_old += 1;
                }
            }
        }
        // Ideal: 1/4 of the keys move, all to the new server. Maglev trades a little
        // extra movement between old servers for its even spread.
        assert!((2200..=2800).contains(&moved), "moved {moved}");
        assert!(
            between_old < 300,
            "{between_old} keys moved between old servers"
        );
        for c in counts {
            assert!((c - 2500i32).abs() < 300, "{counts:?}");
        }
    }

    #[test]
    fn maglev_down_server_moves_only_its_keys_and_weights_count() {
        let t = Maglev::new(&names(3), &[1, 1, 1]);
        let down = |i: usize| if i == 2 { Usable::No } else { Usable::Yes };
        for k in 0..2000u64 {
            let h = hash64(&k.to_le_bytes());
            let a = t.pick(h, 3, &all).unwrap();
            let b = t.pick(h, 3, &down).unwrap();
            if a != 2 {
                assert_eq!(a, b);
            } else {
                assert_ne!(b, 2);
            }
        }
        let w = Maglev::new(&names(2), &[3, 1]);
        let mut n = [0; 2];
        for k in 0..10_000u64 {
            n[w.pick(hash64(&k.to_le_bytes()), 2, &all).unwrap()] += 1;
        }
        assert!((n[0] - 7500i32).abs() < 400, "{n:?}");
    }

    #[test]
    fn keys_come_from_the_head() {
        let head =
            b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-User: alice \r\nCookie: a=1; sid=xyz\r\n\r\n";
        let ks = KeySource {
            head,
            path: b"/a?x=1",
            client: "127.0.0.1".parse().unwrap(),
        };
        assert_eq!(header_value(head, b"x-user"), Some(&b"alice"[..]));
        assert_eq!(cookie_value(head, b"sid"), Some(&b"xyz"[..]));
        assert_eq!(
            ks.hash(&HashOn::Header("x-user".into())),
            Some(hash64(b"alice"))
        );
        assert_eq!(ks.hash(&HashOn::Header("x-none".into())), None);
        assert_eq!(ks.hash(&HashOn::Path), Some(hash64(b"/a")));
        assert_eq!(ks.hash(&HashOn::Cookie("sid".into())), Some(hash64(b"xyz")));
    }
}
