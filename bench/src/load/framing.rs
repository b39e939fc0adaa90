//! HTTP/1.1 response framing, sans-IO: where a response head ends and how long its body is.
//!
//! The generator doubles as a correctness checker, so framing follows RFC 9112 exactly:
//! no body for `HEAD`, 1xx, 204 and 304; `Transfer-Encoding` ending in `chunked` wins over
//! `Content-Length`; otherwise `Content-Length` (conflicting values are refused); otherwise
//! the body runs until the server closes. [`Chunked`] decodes chunked bodies a slice at a
//! time with no allocation, counting data bytes and skipping extensions and trailers. This
//! module reads nothing from sockets; the HTTP/1.1 client feeds it what it received.

/// Headers a response may carry before the head is refused as too large.
pub const MAX_HEADERS: usize = 64;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0 for responses that cannot have a body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// The server will close the connection after this response.
    pub close: bool,
    /// Length of the head in bytes, including the blank line.
    pub len: usize,
}

/// The result of [`parse_head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadParse {
    Complete(Head),
    /// More bytes are needed.
    Partial,
    /// The bytes are not a valid response head.
    Invalid(&'static str),
}

/// Parses a response head at the start of `buf`; `head_request` says the request was `HEAD`.
pub fn parse_head(buf: &[u8], head_request: bool) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return HeadParse::Partial,
        Err(httparse::Error::TooManyHeaders) => return HeadParse::Invalid("too many headers"),
        Err(_) => return HeadParse::Invalid("malformed response head"),
    };
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut conn_close = http10;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let Some(v) = parse_u64(h.value) else {
                return HeadParse::Invalid("bad Content-Length");
            };
            if content_length.is_some_and(|old| old != v) {
                return HeadParse::Invalid("conflicting Content-Length values");
            }
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // Only the last coding decides: `gzip, chunked` is chunked.
            chunked = h
                .value
                .split(|&b| b == b',')
                .next_back()
                .is_some_and(|c| trim(c).eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    conn_close = false;
                }
            }
        }
    }
    let bodiless = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::Length(0)
    } else if transfer_encoding {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    HeadParse::Complete(Head {
        status,
        framing,
        close: conn_close || framing == Framing::UntilClose,
        len,
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { digits: bool },
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

/// A chunked body decoder: feed it bytes, it says how many belonged to the body and
/// whether the body is complete.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    remaining: u64,
    /// Data bytes decoded so far (chunk payloads only).
    pub data: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked {
            state: State::Size { digits: false },
            remaining: 0,
            data: 0,
        }
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes body bytes from `input`; returns how many belonged to the body (all of
    /// them unless the body ended inside `input`).
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data => {
                    let n = (self.remaining.min((input.len() - i) as u64)) as usize;
                    self.remaining -= n as u64;
                    self.data += n as u64;
                    i += n;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::Size { digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        if self.remaining > (u64::MAX >> 4) {
                            return Err("chunk size overflows");
                        }
                        self.remaining = self.remaining << 4 | u64::from(d);
                        self.state = State::Size { digits: true };
                    }
                    b';' | b' ' | b'\t' if digits => self.state = State::Ext,
                    b'\r' if digits => self.state = State::SizeLf,
                    _ => return Err("bad chunk size"),
                },
                State::Ext => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err("bad chunk size line ending");
                    }
                    self.state = if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err("chunk data longer than its size");
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err("bad chunk data line ending");
                    }
                    self.state = State::Size { digits: false };
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::EndLf
                    } else {
                        State::TrailerLine
                    };
                }
                State::TrailerLine => {
                    if b == b'\n' {
                        self.state = State::TrailerStart;
                    }
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err("bad chunked body ending");
                    }
                    self.state = State::Done;
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> HeadParse {
        parse_head(s.as_bytes(), false)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let HeadParse::Complete(h) = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n") else {
            panic!("complete head expected")
        };
        assert_eq!(
            (h.status, h.framing, h.close, h.len),
            (200, Framing::Length(12), false, 39)
        );
        let HeadParse::Complete(h) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ) else {
            panic!("complete head expected")
        };
        assert_eq!(h.framing, Framing::Chunked);
        let HeadParse::Complete(h) = head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n") else {
            panic!("complete head expected")
        };
        assert_eq!((h.framing, h.close), (Framing::UntilClose, true));
        let HeadParse::Complete(h) = head("HTTP/1.1 204 No Content\r\n\r\n") else {
            panic!("complete head expected")
        };
        assert_eq!((h.framing, h.close), (Framing::Length(0), false));
        let HeadParse::Complete(h) = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n") else {
            panic!("complete head expected")
        };
        assert!(h.close);
        let HeadParse::Complete(h) =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
        else {
            panic!("complete head expected")
        };
        assert_eq!(h.framing, Framing::Length(0));
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Le"), HeadParse::Partial);
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            HeadParse::Invalid(_)
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            HeadParse::Invalid(_)
        ));
    }

    #[test]
    fn chunked_bodies_decode_at_every_split_point() {
        let body =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let body_len = body.len() - 4;
        for split in 0..body.len() {
            let mut c = Chunked::new();
            let a = c.feed(&body[..split]);
            let b = c.feed(&body[split..]);
            assert_eq!(a.ok().zip(b.ok()).map(|(a, b)| a + b), Some(body_len));
            assert!(c.done());
            assert_eq!(c.data, 23);
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        assert!(Chunked::new().feed(b"zz\r\n").is_err());
        assert!(Chunked::new().feed(b"2\r\nabc\r\n").is_err());
        assert!(Chunked::new().feed(b"\r\n").is_err());
        assert!(Chunked::new().feed(b"fffffffffffffffff\r\n").is_err());
    }
}
