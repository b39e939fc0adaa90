//! Generators for the codec's property tests (`../fuzz.rs`): request and response heads
//! built line by line, mostly well-formed ("clean") or with odd bytes anywhere ("loose"),
//! byte-level edits of them, random bytes, and chunked bodies from an encoder written
//! here. Every generator yields bytes; what the codec makes of them is for the properties.

use proptest::prelude::*;
use proptest::sample::{select, Index};

pub fn bytes_of(s: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    select(s).prop_map(|s| s.as_bytes().to_vec())
}

/// Randomly re-case ASCII letters (field names and codings are case-insensitive).
pub fn recase(v: Vec<u8>, mask: u64) -> Vec<u8> {
    v.into_iter()
        .enumerate()
        .map(|(i, b)| {
            if mask >> (i % 64) & 1 == 1 {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Bytes that matter to an HTTP/1 parser, plus a few ordinary ones.
pub const ODD: &[u8] = b" \t\r\n\x00\x0b\x0c\x7f\x80\xff:,;=\"/?#%.\\@[]aZ09-_";

pub fn odd_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(select(ODD), 0..max)
}

pub fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => bytes_of(&[
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH",
            "PURGE", "get", "PRI",
        ]),
        1 => "[A-Za-z!#$%&'*+.^_`|~-]{1,8}".prop_map(String::into_bytes),
        1 => odd_bytes(4),
    ]
}

pub fn host_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => bytes_of(&[
            "a", "example.com", "Example.com:8080", "[::1]:80", "10.0.0.1", "h:", "b.example",
        ]),
        1 => bytes_of(&["", "a b", "a,b", "h:1:2", "user@h", "a/b", "[::1", "\u{e9}.com", "h:port"]),
        1 => "[a-z0-9.-]{1,10}(:[0-9]{1,5})?".prop_map(String::into_bytes),
    ]
}

pub fn path() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        select(&[
            "a", "b", "admin", "..", ".", "%2e", "%2E%2e", "%41", "%2f", "%7e", "%zz", "%", "/",
            "/", "/", ";p=1", "?x=/../y", "?", "//", "\\", "~", "#f", "%00",
        ]),
        0..8,
    )
    .prop_map(|parts| {
        let mut p = b"/".to_vec();
        for s in parts {
            p.extend_from_slice(s.as_bytes());
        }
        p
    })
}

pub fn target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => path(),
        3 => (
            bytes_of(&["http://", "HTTP://", "https://", "ftp://", "http:///"]),
            host_value(),
            prop_oneof![path(), Just(Vec::new()), Just(b"?q".to_vec())],
        )
            .prop_map(|(s, h, p)| [s, h, p].concat()),
        1 => bytes_of(&["*", "example.com:443", "example.com", "x", "", "/a b"]),
        1 => odd_bytes(8),
    ]
}

pub fn version() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => bytes_of(&["HTTP/1.1", "HTTP/1.0"]),
        1 => bytes_of(&["HTTP/1.2", "HTTP/2", "HTTP/2.0", "http/1.1", "HTTP/1.1 x", ""]),
    ]
}

/// A line end. Mostly CRLF; bare LF is accepted by the parser, bare CR is not, and a line
/// end followed by a space or tab starts an obs-fold continuation.
pub fn eol() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        24 => Just(&b"\r\n"[..]),
        2 => Just(&b"\n"[..]),
        1 => Just(&b"\r"[..]),
        1 => Just(&b"\r\n "[..]),
        1 => Just(&b"\r\n\t"[..]),
        1 => Just(&b"\r\r\n"[..]),
    ]
}

pub fn separator() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        12 => Just(&b": "[..]),
        4 => Just(&b":"[..]),
        2 => Just(&b":  "[..]),
        1 => Just(&b" :"[..]),
        1 => Just(&b"\t: "[..]),
        1 => Just(&b"::"[..]),
    ]
}

pub fn content_length_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (0u64..100_000).prop_map(|n| n.to_string().into_bytes()),
        1 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        2 => bytes_of(&[
            "0", "5", "5, 5", "5,5", " 5 ", "005", "5, 6", "+5", "-5", "0x5", "5.0", "", "5,",
            ",5", "1 2", "18446744073709551615", "18446744073709551616", "5\x00",
        ]),
    ]
}

pub fn transfer_encoding_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => bytes_of(&["chunked"]).prop_flat_map(|v| any::<u64>().prop_map(move |m| recase(v.clone(), m))),
        3 => bytes_of(&[
            " chunked ", "gzip, chunked", "chunked, gzip", "gzip", "identity", "chunked, chunked",
            "chunked,", ",chunked", "\"chunked\"", "chunked;q=1", "", "\x0bchunked", "chunked\x00",
            "xchunked", "deflate,chunked", "chunk ed", "gzip,\tchunked",
        ]),
        1 => odd_bytes(10),
    ]
}

pub fn connection_value() -> impl Strategy<Value = Vec<u8>> {
    bytes_of(&[
        "close",
        "keep-alive",
        "Keep-Alive",
        "Upgrade",
        "keep-alive, Upgrade",
        "X-Secret",
        "x-secret, close",
        "host, content-length, transfer-encoding",
        "x-forwarded-for, via",
        "te, http2-settings",
        "Upgrade, HTTP2-Settings",
        "",
        " , ",
    ])
}

pub fn generic_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => "[ -~]{0,16}".prop_map(String::into_bytes),
        1 => odd_bytes(12),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

/// One header field line, without its line end: `name sep value`.
pub fn field() -> impl Strategy<Value = Vec<u8>> {
    let named = |names: &'static [&'static str], value: BoxedStrategy<Vec<u8>>| {
        (bytes_of(names), any::<u64>(), separator(), value)
            .prop_map(|(n, m, s, v)| [recase(n, m), s.to_vec(), v].concat())
    };
    prop_oneof![
        3 => named(&["Host"], host_value().boxed()),
        4 => named(&["Content-Length"], content_length_value().boxed()),
        4 => named(&["Transfer-Encoding"], transfer_encoding_value().boxed()),
        2 => named(&["Connection"], connection_value().boxed()),
        2 => named(&["Upgrade"], bytes_of(&["websocket", "h2c", "websocket, H2C", ""]).boxed()),
        1 => named(&["Expect"], bytes_of(&["100-continue", "100-Continue", "200-ok"]).boxed()),
        3 => named(
            &[
                "Keep-Alive", "Proxy-Connection", "TE", "HTTP2-Settings", "Via", "X-Forwarded-For",
                "X-Forwarded-Proto", "Trailer", "X-Secret", "Proxy-Authorization",
            ],
            generic_value().boxed(),
        ),
        1 => named(&["Content_Length", "Transfer_Encoding", "X_Custom"], content_length_value().boxed()),
        4 => ("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", separator(), generic_value())
            .prop_map(|(n, s, v)| [n.into_bytes(), s.to_vec(), v].concat()),
        1 => odd_bytes(16),
    ]
}

pub fn fields(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((field(), eol()), 0..max).prop_map(|fs| {
        let mut out = Vec::new();
        for (f, e) in fs {
            out.extend_from_slice(&f);
            out.extend_from_slice(e);
        }
        out
    })
}

/// A field line the parser accepts in itself (what it says may still be refused).
pub fn clean_field() -> impl Strategy<Value = Vec<u8>> {
    let named = |names: &'static [&'static str], value: BoxedStrategy<Vec<u8>>| {
        (bytes_of(names), any::<u64>(), ok_separator(), value)
            .prop_map(|(n, m, s, v)| [recase(n, m), s.to_vec(), v].concat())
    };
    let value = || {
        "([!-~]([ -~]{0,10}[!-~])?)?"
            .prop_map(String::into_bytes)
            .boxed()
    };
    prop_oneof![
        3 => named(&["Content-Length"], (0u64..100_000).prop_map(|n| n.to_string().into_bytes()).boxed()),
        1 => named(&["Content-Length"], bytes_of(&["5, 5", "0", "5", "007"]).boxed()),
        3 => named(&["Transfer-Encoding"], bytes_of(&["chunked", "Chunked", "chunked ", "CHUNKED"]).boxed()),
        1 => named(&["Transfer-Encoding"], bytes_of(&["gzip, chunked", "gzip"]).boxed()),
        3 => named(&["Connection"], connection_value().boxed()),
        2 => named(&["Upgrade"], bytes_of(&["websocket", "h2c", "websocket, H2C"]).boxed()),
        1 => bytes_of(&["Connection: keep-alive, Upgrade\r\nUpgrade: websocket"]),
        1 => named(&["Expect"], bytes_of(&["100-continue", "200-ok"]).boxed()),
        4 => named(
            &[
                "Keep-Alive", "Proxy-Connection", "TE", "HTTP2-Settings", "Via", "X-Forwarded-For",
                "X-Forwarded-Proto", "Trailer", "X-Secret", "Proxy-Authorization", "Server",
            ],
            value(),
        ),
        4 => ("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", ok_separator(), value())
            .prop_map(|(n, s, v)| [n.into_bytes(), s.to_vec(), v].concat()),
    ]
}

pub fn clean_fields(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let eol = prop_oneof![8 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..])];
    prop::collection::vec((clean_field(), eol), 0..max).prop_map(|fs| {
        let mut out = Vec::new();
        for (f, e) in fs {
            out.extend_from_slice(&f);
            out.extend_from_slice(e);
        }
        out
    })
}

/// A request head that is well-formed line by line (mostly accepted).
pub fn clean_request_head() -> impl Strategy<Value = Vec<u8>> {
    let target = prop_oneof![
        6 => path().prop_map(|p| p.into_iter().filter(|&b| b != b'#').collect::<Vec<u8>>()),
        2 => (bytes_of(&["http://", "HTTPS://"]), bytes_of(&["a", "b.example:8080", "[::1]"]), prop_oneof![path(), Just(Vec::new()), Just(b"?q=1".to_vec())])
            .prop_map(|(s, h, p)| [s, h, p].concat().into_iter().filter(|&b| b != b'#').collect()),
        1 => bytes_of(&["*", "example.com:443"]),
    ];
    (
        bytes_of(&[
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "PATCH", "PURGE", "PRI",
        ]),
        target,
        bytes_of(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
        prop::option::weighted(
            0.9,
            bytes_of(&["a", "example.com:8080", "[::1]:80", "10.0.0.1", ""]),
        ),
        clean_fields(6),
    )
        .prop_map(|(m, t, v, host, fs)| {
            let mut out = [m, b" ".to_vec(), t, b" ".to_vec(), v, b"\r\n".to_vec()].concat();
            if let Some(h) = host {
                out.extend_from_slice(b"Host: ");
                out.extend_from_slice(&h);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(&fs);
            out.extend_from_slice(b"\r\n");
            out
        })
}

pub fn clean_response_head() -> impl Strategy<Value = Vec<u8>> {
    (
        bytes_of(&["HTTP/1.1", "HTTP/1.0"]),
        select(&[
            100u16, 101, 103, 200, 204, 206, 301, 304, 404, 500, 502, 999,
        ]),
        bytes_of(&["OK", "Not Found", "", "Fine \t Thanks"]),
        clean_fields(6),
    )
        .prop_map(|(v, s, r, fs)| {
            [
                v,
                format!(" {s} ").into_bytes(),
                r,
                b"\r\n".to_vec(),
                fs,
                b"\r\n".to_vec(),
            ]
            .concat()
        })
}

/// A request head, mostly well-formed: request line, usually a Host first, fields, end.
pub fn request_head() -> impl Strategy<Value = Vec<u8>> {
    (
        method(),
        target(),
        version(),
        eol(),
        prop::option::weighted(0.8, host_value()),
        fields(8),
        eol(),
    )
        .prop_map(|(m, t, v, e, host, fs, end)| {
            let mut out = [m, b" ".to_vec(), t, b" ".to_vec(), v, e.to_vec()].concat();
            if let Some(h) = host {
                out.extend_from_slice(b"Host: ");
                out.extend_from_slice(&h);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(&fs);
            out.extend_from_slice(end);
            out
        })
}

pub fn response_head() -> impl Strategy<Value = Vec<u8>> {
    (
        bytes_of(&["HTTP/1.1", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/1.1 "]),
        prop_oneof![
            6 => select(&[100u16, 101, 103, 200, 204, 206, 301, 304, 404, 500, 502])
                .prop_map(|s| s.to_string().into_bytes()),
            1 => (0u16..1200).prop_map(|s| format!("{s:03}").into_bytes()),
            1 => odd_bytes(4),
        ],
        prop_oneof![
            4 => bytes_of(&[" OK", " Not Found", " ", "", " Fine \t Thanks", " \u{e9}t\u{e9}"]),
            1 => odd_bytes(8).prop_map(|r| [b" ".to_vec(), r].concat()),
        ],
        eol(),
        fields(8),
        eol(),
    )
        .prop_map(|(v, s, r, e, fs, end)| {
            [v, b" ".to_vec(), s, r, e.to_vec(), fs, end.to_vec()].concat()
        })
}

/// Byte-level edits: replace, insert or delete at a random place.
pub fn mutate(mut v: Vec<u8>, edits: &[(Index, u8, u8)]) -> Vec<u8> {
    for &(at, byte, op) in edits {
        if v.is_empty() {
            v.push(byte);
            continue;
        }
        let i = at.index(v.len());
        match op % 3 {
            0 => v[i] = byte,
            1 => v.insert(i, byte),
            _ => {
                v.remove(i);
            }
        }
    }
    v
}

pub fn edits() -> impl Strategy<Value = Vec<(Index, u8, u8)>> {
    prop::collection::vec(
        (
            any::<Index>(),
            prop_oneof![select(ODD), any::<u8>()],
            any::<u8>(),
        ),
        1..4,
    )
}

/// Structured heads, mutated heads and random bytes, followed by random "body" bytes.
pub fn any_input(
    clean: BoxedStrategy<Vec<u8>>,
    head: BoxedStrategy<Vec<u8>>,
) -> impl Strategy<Value = Vec<u8>> {
    let mutated =
        (prop_oneof![clean.clone(), head.clone()], edits()).prop_map(|(h, e)| mutate(h, &e));
    (
        prop_oneof![
            4 => clean,
            3 => head,
            3 => mutated,
            1 => prop::collection::vec(any::<u8>(), 0..256),
            // The HTTP/2 preface, and request lines that start like it.
            1 => bytes_of(&[
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "PRI * HTTP/1.1\r\nHost: a\r\n\r\n",
                "PRI * HTTP/1.0\r\n\r\n", "PRI / HTTP/1.1\r\nHost: a\r\n\r\n",
            ]),
        ],
        prop::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(h, tail)| [h, tail].concat())
}

pub fn requests() -> impl Strategy<Value = Vec<u8>> {
    any_input(clean_request_head().boxed(), request_head().boxed())
}

pub fn responses() -> impl Strategy<Value = Vec<u8>> {
    any_input(clean_response_head().boxed(), response_head().boxed())
}

/// A separator the parser accepts in a request.
pub fn ok_separator() -> impl Strategy<Value = &'static [u8]> {
    const OK: &[&[u8]] = &[b": ", b":", b":  ", b":\t"];
    select(OK)
}

/// A chunked encoding of a random payload: random chunk sizes, hex in either case with
/// optional leading zeros, optional extensions, a `0` terminator (maybe `000`), optional
/// trailers. Returns (encoding, payload).
pub fn chunked_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let chunk = (
        prop::collection::vec(any::<u8>(), 1..40),
        0usize..3,
        any::<bool>(),
        prop::option::weighted(
            0.3,
            select(&[
                ";a",
                ";name=value",
                " ;x",
                ";q=\"a b\"",
                "\t;ext=1",
                ";a;b=c",
            ]),
        ),
    );
    (
        prop::collection::vec(chunk, 0..6),
        0usize..3,
        prop::option::weighted(0.3, select(&[";last", " ;x=1"])),
        prop::collection::vec(
            ("[A-Za-z0-9-]{1,10}", "[ -~]{0,12}").prop_map(|(n, v)| format!("{n}:{v}\r\n")),
            0..3,
        ),
    )
        .prop_map(|(chunks, zeros, last_ext, trailers)| {
            let mut enc = Vec::new();
            let mut payload = Vec::new();
            for (data, lead, upper, ext) in chunks {
                let size = format!("{:0>width$x}", data.len(), width = lead + 1);
                let size = if upper {
                    size.to_ascii_uppercase()
                } else {
                    size
                };
                enc.extend_from_slice(size.as_bytes());
                if let Some(e) = ext {
                    enc.extend_from_slice(e.as_bytes());
                }
                enc.extend_from_slice(b"\r\n");
                enc.extend_from_slice(&data);
                enc.extend_from_slice(b"\r\n");
                payload.extend_from_slice(&data);
            }
            enc.extend_from_slice("0".repeat(zeros + 1).as_bytes());
            if let Some(e) = last_ext {
                enc.extend_from_slice(e.as_bytes());
            }
            enc.extend_from_slice(b"\r\n");
            for t in trailers {
                enc.extend_from_slice(t.as_bytes());
            }
            enc.extend_from_slice(b"\r\n");
            (enc, payload)
        })
}

pub fn cuts(max: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..max, 0..4).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}
