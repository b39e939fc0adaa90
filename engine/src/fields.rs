//! HTTP fields for the `http` crate's maps, built from a head ringway holds as HTTP/1.1
//! text (a backend's response for the HTTP/2 front, the front's request for an HTTP/2
//! backend) without an allocation per field: names from a small per-shard cache
//! ([`name`]), values as slices of one shared copy of the head ([`Values`]).

use std::cell::RefCell;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

/// Field names seen lately, so a custom name (`x-request-id`, `x-cache`, anything
/// `http` has no constant for) is not a new allocation per head: a clone of a cached
/// `HeaderName` shares its bytes. Standard names are kept too (a clone of one is a copy
/// of a small enum), so a head's fields are usually found here without
/// `HeaderName::from_bytes`'s parse. Direct-mapped: a name has one slot, picked by a hash
/// of its length and six of its bytes (any case), so a lookup looks at one entry, and
/// compares it byte for byte with the spelling seen last before it compares it blind to
/// case (which cost about 150 instructions per field). A name whose slot another holds
/// replaces it: a peer that sends ever-new names costs what it did before, plus one
/// comparison.
struct NameCache {
    /// The name as a peer last spelled it (compared byte for byte first: a peer spells a
    /// name the same way every time, and a case-blind comparison costs ten times more),
    /// and its `HeaderName`.
    slots: [Option<(Box<[u8]>, HeaderName)>; SLOTS],
}

/// Slots of a shard's [`NameCache`] (a power of two; 6 KiB).
const SLOTS: usize = 128;

thread_local! {
    /// The shard's cache (one thread per shard: no lock, no sharing).
    static NAMES: RefCell<NameCache> =
        const { RefCell::new(NameCache { slots: [const { None }; SLOTS] }) };
}

/// The slot of a field name: the same for any case of it.
fn slot(name: &[u8]) -> usize {
    let n = name.len();
    // `| 0x20` folds ASCII letters to lower case (other bytes only hash differently).
    let fold = |i: usize| u64::from(name.get(i).copied().unwrap_or(0) | 0x20);
    let h = (n as u64) << 48
        | fold(0) << 40
        | fold(1) << 32
        | fold(n / 2) << 24
        | fold(n / 2 + 1) << 16
        | fold(n.wrapping_sub(2)) << 8
        | fold(n.wrapping_sub(1));
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// The `HeaderName` for a field name (any case), from the shard's cache when it was seen
/// lately; `None` when it is no valid name.
pub fn name(name: &[u8]) -> Option<HeaderName> {
    let at = slot(name);
    NAMES.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((spelled, n)) = &c.slots[at] {
            if **spelled == *name || n.as_str().as_bytes().eq_ignore_ascii_case(name) {
                return Some(n.clone());
            }
        }
        let n = HeaderName::from_bytes(name).ok()?;
        c.slots[at] = Some((name.into(), n.clone()));
        Some(n)
    })
}

/// Field values of one head: a value that is a slice of `text` becomes a slice of one
/// shared copy of it, taken at the first such value (one allocation for the head instead
/// of one per value); any other value is copied on its own.
pub struct Values<'a> {
    text: &'a [u8],
    shared: Option<Bytes>,
}

impl<'a> Values<'a> {
    pub fn new(text: &'a [u8]) -> Values<'a> {
        Values { text, shared: None }
    }

    /// `v` as a field value; `None` when it is not a valid one.
    pub fn value(&mut self, v: &[u8]) -> Option<HeaderValue> {
        let (base, at) = (self.text.as_ptr() as usize, v.as_ptr() as usize);
        if !v.is_empty() && at >= base && at + v.len() <= base + self.text.len() {
            let text = self.text;
            let shared = self
                .shared
                .get_or_insert_with(|| Bytes::copy_from_slice(text));
            let off = at - base;
            return HeaderValue::from_maybe_shared(shared.slice(off..off + v.len())).ok();
        }
        HeaderValue::from_bytes(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_cache_in_any_case_and_it_stays_bounded() {
        let a = name(b"X-Origin-Req").unwrap();
        assert_eq!(a, "x-origin-req");
        // The second lookup (another case) is the cached name: its bytes are shared.
        let b = name(b"x-ORIGIN-req").unwrap();
        assert_eq!(b, a);
        assert_eq!(b.as_str().as_ptr(), a.as_str().as_ptr());
        assert_eq!(
            name(b"content-length").unwrap(),
            http::header::CONTENT_LENGTH
        );
        assert!(name(b"bad name").is_none());
        // Many new names: every answer stays right, and the cache holds at most SLOTS.
        for i in 0..3 * SLOTS {
            let n = format!("x-n{i}");
            assert_eq!(name(n.as_bytes()).unwrap(), n.as_str());
        }
        NAMES.with(|c| assert!(c.borrow().slots.iter().flatten().count() <= SLOTS));
        assert_eq!(name(b"X-Origin-Req").unwrap(), "x-origin-req");
    }

    #[test]
    fn names_that_share_a_slot_replace_each_other_and_both_stay_right() {
        let first = "x-aaaa";
        let other = (0..10_000)
            .map(|i| format!("x-b{i}"))
            .find(|n| slot(n.as_bytes()) == slot(first.as_bytes()))
            .expect("a name in the same slot");
        for _ in 0..3 {
            assert_eq!(name(first.as_bytes()).unwrap(), first);
            assert_eq!(name(other.as_bytes()).unwrap(), other.as_str());
        }
        // The slot holds the last one; the other is parsed again and takes it back.
        let held = NAMES.with(|c| c.borrow().slots[slot(first.as_bytes())].clone());
        assert_eq!(held.unwrap().1, other.as_str());
        assert_eq!(name(b"X-AAAA").unwrap(), first);
    }

    #[test]
    fn the_slot_of_a_name_is_the_same_in_any_case_and_common_names_spread() {
        for n in ["content-type", "x-request-id", "a", ""] {
            let up = n.to_ascii_uppercase();
            assert_eq!(slot(n.as_bytes()), slot(up.as_bytes()), "{n}");
        }
        let common = [
            "content-type",
            "content-length",
            "date",
            "server",
            "cache-control",
            "etag",
            "last-modified",
            "vary",
            "set-cookie",
            "location",
            "x-request-id",
            "content-encoding",
            "accept-ranges",
            "age",
            "expires",
            "x-origin-req",
            "x-origin-conn",
        ];
        let used: std::collections::BTreeSet<usize> =
            common.iter().map(|n| slot(n.as_bytes())).collect();
        assert!(
            used.len() >= common.len() - 1,
            "{} slots for {} common names",
            used.len(),
            common.len()
        );
    }

    #[test]
    fn values_from_the_head_share_one_copy_and_others_are_their_own() {
        let text = b"GET / HTTP/1.1\r\nA: one\r\nB: two\r\n\r\n".to_vec();
        let mut v = Values::new(&text);
        let one = v.value(&text[19..22]).unwrap();
        let two = v.value(&text[27..30]).unwrap();
        assert_eq!((one.as_bytes(), two.as_bytes()), (&b"one"[..], &b"two"[..]));
        // Both point into the same copy, 8 bytes apart as in the text.
        assert_eq!(
            two.as_bytes().as_ptr() as usize - one.as_bytes().as_ptr() as usize,
            8
        );
        assert_ne!(
            one.as_bytes().as_ptr(),
            text[19..].as_ptr(),
            "a copy, not the text"
        );
        let other = v.value(b"elsewhere").unwrap();
        assert_eq!(other, "elsewhere");
        assert!(v.value(b"bad\nvalue").is_none());
        assert_eq!(v.value(b"").unwrap(), "");
    }
}
