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
/// `HeaderName::from_bytes`'s parse. Small and replaced round-robin: a peer that sends
/// ever-new names costs what it did before, plus a short scan.
struct NameCache {
    names: Vec<HeaderName>,
    next: usize,
}

/// Names a shard keeps in its [`NameCache`].
const NAMES_KEPT: usize = 32;

thread_local! {
    /// The shard's cache (one thread per shard: no lock, no sharing).
    static NAMES: RefCell<NameCache> = const { RefCell::new(NameCache { names: Vec::new(), next: 0 }) };
}

/// The `HeaderName` for a field name (any case), from the shard's cache when it was seen
/// lately; `None` when it is no valid name.
pub fn name(name: &[u8]) -> Option<HeaderName> {
    NAMES.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(n) = c.names.iter().find(|n| {
            n.as_str().len() == name.len() && n.as_str().as_bytes().eq_ignore_ascii_case(name)
        }) {
            return Some(n.clone());
        }
        let n = HeaderName::from_bytes(name).ok()?;
        if c.names.len() < NAMES_KEPT {
            c.names.push(n.clone());
        } else {
            let at = c.next;
            c.names[at] = n.clone();
            c.next = (at + 1) % NAMES_KEPT;
        }
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
        // Many new names: the cache keeps NAMES_KEPT and every answer stays right.
        for i in 0..3 * NAMES_KEPT {
            let n = format!("x-n{i}");
            assert_eq!(name(n.as_bytes()).unwrap(), n.as_str());
        }
        NAMES.with(|c| assert_eq!(c.borrow().names.len(), NAMES_KEPT));
        assert_eq!(name(b"X-Origin-Req").unwrap(), "x-origin-req");
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
