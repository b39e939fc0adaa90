//! The request-target, normalised: one view of "which resource" for routing and for what
//! goes upstream, so that no spelling of a target can reach a backend by a route that
//! does not name it.
//!
//! Two forms, both computed from the target `parse_request` accepted (origin-form or
//! absolute-form; `*` and CONNECT's authority-form are left alone):
//!
//! - [`write_normalized_target`], what is sent upstream: the path made *equivalent* per
//!   RFC 3986 §6.2.2 — `%XX` of an unreserved character decoded (`%41` → `A`), the hex
//!   digits of every other escape upper-cased (`%2f` → `%2F`), dot-segments removed
//!   (§5.2.4, after decoding, so `%2e%2e` counts) — and the query unchanged. Nothing a
//!   server could read differently is changed: `//`, `;` parameters, `%2F` and case stay.
//!   An absolute-form target keeps its `scheme://authority` and gets the same path.
//! - [`route_path`], what routes match on: the path only (no query), every `%XX` decoded
//!   once, `\` taken as `/`, `;parameters` cut from every segment (Tomcat, Jetty and
//!   Spring read `/admin;x` as `/admin`), dot-segments removed, runs of `/` merged. It is
//!   deliberately a superset of what common servers do, so a target that any of them
//!   reads as `/admin/...` routes as `/admin/...` here; routes then compare it with their
//!   prefix ignoring ASCII case (IIS and case-insensitive file systems).
//!
//! Neither allocates beyond extending the caller's buffer, and both are total (no panic
//! on any input). `route_path` returns the target's own bytes when nothing needs to change,
//! which is the common case.

/// The origin-form part of `target` (path and query) and the `scheme://authority` before
/// it (empty for an origin-form target). An absolute-form target without a path has an
/// empty origin part (its path is `/`).
pub fn split_absolute(target: &[u8]) -> (&[u8], &[u8]) {
    if target.first().is_some_and(|&b| b == b'/' || b == b'*') {
        return (&[], target);
    }
    let Some(sep) = find(target, b"://") else {
        return (&[], target);
    };
    let after = sep + 3;
    let end = target[after..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?'))
        .map_or(target.len(), |i| after + i);
    (&target[..end], &target[end..])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split_query(origin: &[u8]) -> (&[u8], &[u8]) {
    match origin.iter().position(|&b| b == b'?') {
        Some(i) => (&origin[..i], &origin[i..]),
        None => (origin, &[]),
    }
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|v| v as u8)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Appends the target as it goes upstream (see the module docs). `target` is the
/// request-target as received.
pub fn write_normalized_target(target: &[u8], out: &mut Vec<u8>) {
    if target == b"*" {
        out.push(b'*');
        return;
    }
    let (prefix, origin) = split_absolute(target);
    out.extend_from_slice(prefix);
    let (path, query) = split_query(origin);
    if path.is_empty() {
        out.push(b'/');
        out.extend_from_slice(query);
        return;
    }
    if !path_needs_equivalence(path) {
        out.extend_from_slice(path);
        out.extend_from_slice(query);
        return;
    }
    let start = out.len();
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' && i + 2 < path.len() {
            if let (Some(h), Some(l)) = (hex_val(path[i + 1]), hex_val(path[i + 2])) {
                let v = h << 4 | l;
                if is_unreserved(v) && !completes_an_escape(&out[start..], v) {
                    out.push(v);
                } else {
                    out.push(b'%');
                    out.push(path[i + 1].to_ascii_uppercase());
                    out.push(path[i + 2].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    remove_dot_segments(out, start, false);
    out.extend_from_slice(query);
}

/// Whether pushing the decoded byte `v` after `out` would make a `%XX` escape out of a
/// lone `%` before it (`/%a%41` is not `/%aA`, `/%%36%31` is not `/%61`): the escape is
/// then kept, so the path stays equivalent and normalising it again changes nothing.
fn completes_an_escape(out: &[u8], v: u8) -> bool {
    v.is_ascii_hexdigit()
        && match out {
            [.., b'%'] => true,
            [.., b'%', h] => h.is_ascii_hexdigit(),
            _ => false,
        }
}

/// Whether RFC 3986 equivalence could change `path`: an escape, or a `.` segment.
fn path_needs_equivalence(path: &[u8]) -> bool {
    path.contains(&b'%') || has_dot_segment(path)
}

fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|&b| b == b'/')
        .any(|seg| seg == b"." || seg == b"..")
}

/// The path routes match on (see the module docs): `target`'s own bytes when nothing
/// needs to change, else written into `scratch` (cleared first). It is computed from the
/// form that goes upstream ([`write_normalized_target`]), so what routes see and what the
/// backend gets never disagree on a dot-segment.
pub fn route_path<'a>(target: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let (_, origin) = split_absolute(target);
    let (path, _) = split_query(origin);
    if path.is_empty() {
        return b"/";
    }
    let plain = !path.iter().any(|&b| matches!(b, b'%' | b'\\' | b';'))
        && !has_dot_segment(path)
        && !path.windows(2).any(|w| w == b"//");
    if plain {
        return path;
    }
    scratch.clear();
    write_normalized_target(path, scratch);
    // In place: the output never runs ahead of the input.
    let (mut r, mut w) = (0, 0);
    let mut in_params = false;
    let end = scratch.len();
    while r < end {
        let mut b = scratch[r];
        r += 1;
        if b == b'%' && r + 1 < end {
            if let (Some(h), Some(l)) = (hex_val(scratch[r]), hex_val(scratch[r + 1])) {
                b = h << 4 | l;
                r += 2;
            }
        }
        if b == b'\\' {
            b = b'/';
        }
        match b {
            b'/' => {
                in_params = false;
                // Merge runs of slashes.
                if w == 0 || scratch[w - 1] != b'/' {
                    scratch[w] = b'/';
                    w += 1;
                }
            }
            b';' => in_params = true,
            _ if in_params => {}
            _ => {
                scratch[w] = b;
                w += 1;
            }
        }
    }
    scratch.truncate(w);
    remove_dot_segments(scratch, 0, true);
    if scratch.is_empty() {
        scratch.push(b'/');
    }
    scratch
}

/// Removes `.` and `..` segments from the path in `buf[start..]` (RFC 3986 §5.2.4, for
/// a path that starts with `/`; a `..` above the root stays at the root). With `merge`,
/// empty segments are dropped as well.
fn remove_dot_segments(buf: &mut Vec<u8>, start: usize, merge: bool) {
    if !has_dot_segment(&buf[start..]) && !merge {
        return;
    }
    let mut w = start; // write position; buf[start..w] is the output so far
    let mut r = start;
    let end = buf.len();
    while r < end {
        // buf[r] is '/' (or the path does not start with one: copy the first segment).
        let seg_start = if buf[r] == b'/' { r + 1 } else { r };
        let seg_end = buf[seg_start..end]
            .iter()
            .position(|&b| b == b'/')
            .map_or(end, |i| seg_start + i);
        let last = seg_end == end;
        let seg_len = seg_end - seg_start;
        let is_dot = seg_len == 1 && buf[seg_start] == b'.';
        let is_dotdot = seg_len == 2 && buf[seg_start] == b'.' && buf[seg_start + 1] == b'.';
        if is_dot || is_dotdot {
            if is_dotdot {
                // Drop the last output segment.
                while w > start && buf[w - 1] != b'/' {
                    w -= 1;
                }
                w = w.saturating_sub(1).max(start);
            }
            if last {
                // `/a/.` and `/a/b/..` end in a directory: keep the trailing slash.
                buf[w] = b'/';
                w += 1;
            }
        } else if merge && seg_len == 0 && !last {
            // `//`: nothing.
        } else {
            if buf[r] == b'/' {
                buf[w] = b'/';
                w += 1;
            }
            // Copy the segment (w <= seg_start, so this never overtakes the reader).
            buf.copy_within(seg_start..seg_end, w);
            w += seg_len;
        }
        r = seg_end;
    }
    if w == start {
        buf.truncate(start);
        buf.push(b'/');
    } else {
        buf.truncate(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(t: &str) -> String {
        let mut out = Vec::new();
        write_normalized_target(t.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn key(t: &str) -> String {
        let mut s = Vec::new();
        String::from_utf8(route_path(t.as_bytes(), &mut s).to_vec()).unwrap()
    }

    #[test]
    fn upstream_form_is_rfc3986_equivalent() {
        assert_eq!(up("/a/b?x=/../y"), "/a/b?x=/../y");
        assert_eq!(up("/%61dmin/%2fx%7e"), "/admin/%2Fx~");
        assert_eq!(up("/a/./b/../c"), "/a/c");
        assert_eq!(up("/a/%2e%2E/admin"), "/admin");
        assert_eq!(up("/../../admin"), "/admin");
        assert_eq!(up("/a/.."), "/");
        assert_eq!(up("/a/b/."), "/a/b/");
        assert_eq!(up("/a//b;p=1/"), "/a//b;p=1/");
        assert_eq!(up("/%zz%4"), "/%zz%4");
        assert_eq!(up("*"), "*");
        assert_eq!(up("http://h:1"), "http://h:1/");
        assert_eq!(up("http://h:1?q"), "http://h:1/?q");
        assert_eq!(up("HTTP://h/x/../y?z"), "HTTP://h/y?z");
    }

    /// Found by `fuzz::request_rewrite_round_trip`: decoding `%41` right after a lone `%a`
    /// made a new escape (`/%a%41` went up as `/%aA`, byte 0xAA to the backend; `/%%36%31`
    /// as `/%61`, a double decode), so the target sent was not equivalent to the one
    /// received and normalising it again changed it.
    #[test]
    fn request_rewrite_round_trip_no_new_escapes() {
        assert_eq!(up("/%a%41"), "/%a%41");
        assert_eq!(up("/%%36%31dmin"), "/%%361dmin");
        assert_eq!(up("/%4%31/%41"), "/%4%31/A");
        assert_eq!(up("/%%zz%41"), "/%%zzA");
        for t in ["/%a%41", "/%%36%31dmin", "/%4%31", "/%%%34%31"] {
            assert_eq!(up(&up(t)), up(t), "{t}");
        }
    }

    #[test]
    fn route_path_sees_through_spellings() {
        for t in [
            "/admin",
            "/%61dmin",
            "/%2561dmin/../admin",
            "//admin",
            "/./admin",
            "/x/../admin",
            "/x/%2e%2e/admin",
            "/x/..%2fadmin",
            "/x\\..\\admin",
            "/x/..;/admin",
            "/admin;jsessionid=1",
            "http://evil/admin?x",
            "https://evil//admin",
            "/x/%2E%2E%5Cadmin",
        ] {
            assert!(key(t).starts_with("/admin"), "{t} -> {}", key(t));
        }
        assert_eq!(key("/a/b?q=/../c"), "/a/b");
        assert_eq!(key("/"), "/");
        assert_eq!(key("http://h"), "/");
        assert_eq!(key("/.."), "/");
        assert_eq!(key("/;x"), "/");
        assert_eq!(key("/static/logo.png"), "/static/logo.png");
    }

    #[test]
    fn total_on_odd_bytes() {
        let alphabet = b"/.%;\\?2eEfF5cC:a";
        let mut rng: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..20_000 {
            let mut t = vec![b'/'];
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 12) as usize;
            for k in 0..len {
                t.push(alphabet[((rng >> (k * 4)) % alphabet.len() as u64) as usize]);
            }
            let mut out = Vec::new();
            write_normalized_target(&t, &mut out);
            assert!(out.starts_with(b"/"), "{:?}", String::from_utf8_lossy(&t));
            let mut s = Vec::new();
            let k = route_path(&t, &mut s).to_vec();
            assert!(k.starts_with(b"/"));
            // Normalising twice changes nothing, and routes see the same path either way.
            let mut again = Vec::new();
            write_normalized_target(&out, &mut again);
            assert_eq!(again, out, "{:?}", String::from_utf8_lossy(&t));
            let mut s2 = Vec::new();
            assert_eq!(
                route_path(&out, &mut s2),
                &k[..],
                "{:?}",
                String::from_utf8_lossy(&t)
            );
        }
    }
}
