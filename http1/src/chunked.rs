//! Finding the end of a chunked body while its bytes stream through unchanged.
//!
//! ringway forwards chunked bodies verbatim (sizes, extensions and trailers included), so
//! it does not decode them: [`ChunkedScanner`] is a validating state machine that is fed
//! whatever arrived and says how many of those bytes belong to the body and whether the
//! body is over. It is strict (RFC 9112 §7.1) where leniency would let a backend see a
//! different boundary than we do: no bare LF, no size without digits, no sign or `0x`, no
//! more than 16 hex digits or 2^62, no control bytes in extensions or trailers. Its answer
//! never depends on how the bytes were split across calls. It never allocates, never
//! buffers, and never looks past the end of the body (those bytes are the next message).

/// Default limit on the trailer section (all trailer field lines and the final CRLF).
pub const MAX_TRAILER: usize = 16 * 1024;

/// Longest chunk extension accepted on one chunk-size line.
const MAX_EXTENSION: u32 = 4096;

/// Largest chunk size accepted: 2^62.
const MAX_CHUNK_SIZE: u64 = 1 << 62;

/// Why a chunked body is refused. The connection it came from cannot be trusted any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk-size line (no hex digits, a bad byte, or an oversized extension)")]
    BadSize,
    #[error("chunk size too large (more than 16 hex digits or 2^62 bytes)")]
    SizeTooLarge,
    #[error("chunked body line not terminated by CRLF")]
    BadLineEnd,
    #[error("chunked trailer section larger than the limit")]
    TrailerTooLarge,
    #[error("malformed trailer field line in a chunked body")]
    BadTrailer,
    #[error("chunk extension not of the form `;name[=token|\"quoted\"]` (RFC 9112 7.1.1)")]
    BadExtension,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size (`digits` so far).
    Size,
    /// Whitespace after the size digits; only more whitespace or `;` may follow.
    SizeBws,
    /// Chunk extensions (RFC 9112 §7.1.1: `*( BWS ";" BWS name [ BWS "=" BWS value ] )`,
    /// value a token or a quoted-string): after a `;`, before the name.
    ExtStart,
    ExtName,
    /// Whitespace after a name: `=`, `;` or the CR may follow.
    ExtNameBws,
    /// After `=`, before the value.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    /// After a backslash in a quoted value.
    ExtQuotedEscape,
    /// After a value: whitespace, `;` or the CR.
    ExtEnd,
    /// Saw the CR ending a chunk-size line.
    SizeLf,
    /// Chunk data; `remaining` bytes to go.
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer field line, or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
    Done,
}

/// The state of one chunked body being forwarded. Create one per message.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    /// The size being read, then the data bytes left in the current chunk.
    remaining: u64,
    digits: u8,
    extension_len: u32,
    trailer_len: usize,
    max_trailer: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes allowed in an extension or a trailer value: HTAB, SP, VCHAR, obs-text.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// One byte of a chunk extension. Extensions are forwarded verbatim, so one that does not
/// parse is refused here rather than left for the next hop to read another way.
fn extension_step(st: State, b: u8) -> Result<State, ChunkError> {
    let ws = b == b' ' || b == b'\t';
    Ok(match (st, b) {
        (State::ExtQuoted, b'"') => State::ExtEnd,
        (State::ExtQuoted, b'\\') => State::ExtQuotedEscape,
        // qdtext: HTAB, SP, VCHAR but `"` and `\`, obs-text.
        (State::ExtQuoted, _) if is_field_byte(b) => State::ExtQuoted,
        // quoted-pair: HTAB, SP, VCHAR, obs-text.
        (State::ExtQuotedEscape, _) if is_field_byte(b) => State::ExtQuoted,
        (State::ExtQuoted | State::ExtQuotedEscape, b'\n') => return Err(ChunkError::BadLineEnd),
        (State::ExtQuoted | State::ExtQuotedEscape, _) => return Err(ChunkError::BadExtension),
        (_, b'\n') => return Err(ChunkError::BadLineEnd),
        (State::ExtStart, _) if ws => State::ExtStart,
        (State::ExtStart | State::ExtName, _) if is_tchar(b) => State::ExtName,
        (State::ExtName | State::ExtNameBws, _) if ws => State::ExtNameBws,
        (State::ExtName | State::ExtNameBws | State::ExtToken | State::ExtEnd, b'\r') => {
            State::SizeLf
        }
        (State::ExtName | State::ExtNameBws | State::ExtToken | State::ExtEnd, b';') => {
            State::ExtStart
        }
        (State::ExtName | State::ExtNameBws, b'=') => State::ExtValueStart,
        (State::ExtValueStart, _) if ws => State::ExtValueStart,
        (State::ExtValueStart, b'"') => State::ExtQuoted,
        (State::ExtValueStart | State::ExtToken, _) if is_tchar(b) => State::ExtToken,
        (State::ExtToken | State::ExtEnd, _) if ws => State::ExtEnd,
        _ => return Err(ChunkError::BadExtension),
    })
}

impl ChunkedScanner {
    pub fn new() -> Self {
        Self::with_max_trailer(MAX_TRAILER)
    }

    /// A scanner that refuses a trailer section over `max_trailer` bytes.
    pub fn with_max_trailer(max_trailer: usize) -> Self {
        ChunkedScanner {
            state: State::Size,
            remaining: 0,
            digits: 0,
            extension_len: 0,
            trailer_len: 0,
            max_trailer,
        }
    }

    /// The last byte of the body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feed the next bytes of the body. Returns how many bytes of `data` belong to this body
    /// (all of them unless the body ends inside `data`) and whether the body is complete.
    /// After completion every call returns `(0, true)`. After an error the scanner must not
    /// be used again (the connection is closed).
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), ChunkError> {
        self.feed_decoded(data, |_| {})
    }

    /// Like [`ChunkedScanner::feed`], and also hands each piece of chunk *payload* found in
    /// `data` to `on_data`, in order: the decoded body. For the one case where the proxy
    /// must de-chunk (a chunked response to an HTTP/1.0 client, see
    /// `ResponseHead::needs_dechunk`); the trailer section is dropped.
    pub fn feed_decoded(
        &mut self,
        data: &[u8],
        on_data: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), ChunkError> {
        self.feed_with_trailers(data, on_data, |_| {})
    }

    /// Like [`ChunkedScanner::feed_decoded`], and also hands each byte of the trailer
    /// section (its field lines and the final CRLF, at most the trailer limit) to
    /// `on_trailer`: for a front that passes trailers on in another protocol (HTTP/2).
    pub fn feed_with_trailers(
        &mut self,
        data: &[u8],
        mut on_data: impl FnMut(&[u8]),
        mut on_trailer: impl FnMut(u8),
    ) -> Result<(usize, bool), ChunkError> {
        if self.state == State::Done {
            return Ok((0, true));
        }
        let mut i = 0;
        while i < data.len() {
            if self.state == State::Data {
                // Bulk skip: the common case, chunk payload.
                let avail = (data.len() - i) as u64;
                let take = self.remaining.min(avail) as usize;
                on_data(&data[i..i + take]);
                i += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            let in_trailer = matches!(
                self.state,
                State::TrailerStart
                    | State::TrailerName
                    | State::TrailerValue
                    | State::TrailerLf
                    | State::EndLf
            );
            self.step(b)?;
            if in_trailer {
                on_trailer(b);
            }
            if self.state == State::Done {
                return Ok((i, true));
            }
        }
        Ok((i, self.state == State::Done))
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        if matches!(
            self.state,
            State::TrailerStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf
                | State::EndLf
        ) {
            self.trailer_len += 1;
            if self.trailer_len > self.max_trailer {
                return Err(ChunkError::TrailerTooLarge);
            }
        }
        self.state = match (self.state, b) {
            (State::Size, _) if b.is_ascii_hexdigit() => {
                if self.digits == 16 {
                    return Err(ChunkError::SizeTooLarge);
                }
                self.digits += 1;
                // 16 digits fit in a u64; the 2^62 bound is checked when the line ends.
                let v = (b as char).to_digit(16).unwrap_or(0);
                self.remaining = (self.remaining << 4) | u64::from(v);
                State::Size
            }
            (State::Size, _) if self.digits == 0 => return Err(ChunkError::BadSize),
            (State::Size, b'\r') => State::SizeLf,
            (State::Size, b';') => State::ExtStart,
            (State::Size, b' ' | b'\t') | (State::SizeBws, b' ' | b'\t') => State::SizeBws,
            (State::SizeBws, b';') => State::ExtStart,
            (State::Size | State::SizeBws, b'\n') => return Err(ChunkError::BadLineEnd),
            (State::Size | State::SizeBws, _) => return Err(ChunkError::BadSize),
            (
                st @ (State::ExtStart
                | State::ExtName
                | State::ExtNameBws
                | State::ExtValueStart
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedEscape
                | State::ExtEnd),
                _,
            ) => {
                self.extension_len += 1;
                if self.extension_len > MAX_EXTENSION {
                    return Err(ChunkError::BadSize);
                }
                extension_step(st, b)?
            }
            (State::SizeLf, b'\n') => {
                if self.remaining > MAX_CHUNK_SIZE {
                    return Err(ChunkError::SizeTooLarge);
                }
                self.digits = 0;
                self.extension_len = 0;
                if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size,
            (State::SizeLf | State::DataCr | State::DataLf, _) => {
                return Err(ChunkError::BadLineEnd)
            }
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::TrailerName, _) if is_tchar(b) => State::TrailerName,
            (State::TrailerName, b':') => State::TrailerValue,
            (State::TrailerValue, b'\r') => State::TrailerLf,
            (State::TrailerValue, _) if is_field_byte(b) => State::TrailerValue,
            (State::TrailerLf | State::EndLf, b'\n') => {
                if self.state == State::EndLf {
                    State::Done
                } else {
                    State::TrailerStart
                }
            }
            (State::TrailerStart | State::TrailerName | State::TrailerValue, b'\n') => {
                return Err(ChunkError::BadLineEnd)
            }
            (State::TrailerLf | State::EndLf, _) => return Err(ChunkError::BadLineEnd),
            (State::TrailerStart | State::TrailerName | State::TrailerValue, _) => {
                return Err(ChunkError::BadTrailer)
            }
            // Data is handled in bulk by `feed`; Done never reaches here.
            (State::Data | State::Done, _) => self.state,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_are_handed_over_however_split() {
        let body = b"5\r\nhello\r\n0\r\nx-a: 1\r\nx-b: two\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut s = ChunkedScanner::new();
            let (mut data, mut trailer, mut used) = (Vec::new(), Vec::new(), 0);
            for part in [&body[..split], &body[split..]] {
                let (n, _) = s
                    .feed_with_trailers(part, |d| data.extend_from_slice(d), |b| trailer.push(b))
                    .unwrap();
                used += n;
            }
            assert!(s.is_done());
            assert_eq!(used, body.len() - 4);
            assert_eq!(data, b"hello");
            assert_eq!(trailer, b"x-a: 1\r\nx-b: two\r\n\r\n", "split {split}");
        }
    }

    /// Feed `pieces` in order, stopping at the end of the body; total consumed and done.
    fn drive(pieces: &[&[u8]]) -> Result<(usize, bool), ChunkError> {
        let mut s = ChunkedScanner::new();
        let mut total = 0;
        for p in pieces {
            let (n, done) = s.feed(p)?;
            assert!(n <= p.len());
            total += n;
            if done {
                assert_eq!(s.feed(b"more"), Ok((0, true)));
                return Ok((total, true));
            }
            assert_eq!(
                n,
                p.len(),
                "an unfinished body consumes everything it is given"
            );
        }
        Ok((total, false))
    }

    fn whole(data: &[u8]) -> Result<(usize, bool), ChunkError> {
        drive(&[data])
    }

    const CASES: &[&[u8]] = &[
        b"5\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
        b"A;name=value;q=\"a b\"\r\n0123456789\r\n00\r\n\r\nX",
        b"3 ;ext\r\nabc\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\nnext",
        b"1\r\n\n\r\n0\r\n\r\n",
        b"0\r\n\r\n",
        b"5\r\nhel",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"0\r\n\n",
        b"0\r\nX: y\n\r\n",
        b"0\r\nbad trailer\r\n\r\n",
        b"0\r\n: v\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",
        b"5 5\r\nhello\r\n0\r\n\r\n",
        b"5;a\x00b\r\nhello\r\n0\r\n\r\n",
        b"5;a\nb\r\nhello\r\n0\r\n\r\n",
        b"00000000000000005\r\nhello\r\n0\r\n\r\n",
        b"4000000000000001\r\n",
        b"4000000000000000\r\nabc",
        b"ffffffffffffffff\r\n",
    ];

    #[test]
    fn complete_bodies_and_pipelining() {
        assert_eq!(whole(b"5\r\nhello\r\n0\r\n\r\n"), Ok((15, true)));
        let raw = b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(whole(raw), Ok((15, true)));
        let raw = b"3 ;ext\r\nabc\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\nnext";
        assert_eq!(whole(raw), Ok((raw.len() - 4, true)));
        assert_eq!(
            whole(b"A;name=value;q=\"a b\"\r\n0123456789\r\n00\r\n\r\nX"),
            Ok((40, true))
        );
        assert_eq!(whole(b"0\r\n\r\n"), Ok((5, true)));
        assert_eq!(whole(b"0;last\r\n\r\n"), Ok((10, true)));
        assert_eq!(whole(b"5\r\nhel"), Ok((6, false)));
        // Data may contain anything, CRLF included.
        assert_eq!(whole(b"4\r\n\r\n\r\n\r\n0\r\n\r\n"), Ok((14, true)));
        // Upper-case hex, 2^62 exactly.
        assert_eq!(whole(b"4000000000000000\r\nabc"), Ok((21, false)));
        assert_eq!(whole(b"Ff\r\n"), Ok((4, false)));
    }

    /// Chunk extensions follow RFC 9112 §7.1.1 or the body is refused (item 8 of the
    /// hardening issue: bad grammar used to be forwarded verbatim, for the next hop to
    /// read its own way).
    #[test]
    fn chunk_extension_grammar() {
        for ok in [
            &b"5;a\r\nhello\r\n0\r\n\r\n"[..],
            b"5;a=b\r\nhello\r\n0\r\n\r\n",
            b"5 ; a = b ; c\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"b c;d=\\\"e\\\"\"\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"\"\r\nhello\r\n0;z\r\n\r\n",
            b"5;a=b ;c=\"x\" \r\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(
                whole(ok),
                Ok((ok.len(), true)),
                "{:?}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &b"5;\r\nhello\r\n0\r\n\r\n"[..],
            b"5;=b\r\n",
            b"5;a=\r\n",
            b"5;a=b c\r\n",
            b"5;a b\r\n",
            b"5;a=\"unterminated\r\n",
            b"5;a=\"x\"y\r\n",
            b"5;a=b=c\r\n",
            b"5;a,b\r\n",
            b"5;;a\r\n",
            b"5;a=\"x\x7f\"\r\n",
        ] {
            assert_eq!(
                whole(bad),
                Err(ChunkError::BadExtension),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(whole(b"5;a=\"x\ny\"\r\n"), Err(ChunkError::BadLineEnd));
    }

    #[test]
    fn refusals() {
        assert_eq!(whole(b"5\nhello\r\n0\r\n\r\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(whole(b"5\r\nhello\n0\r\n\r\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(
            whole(b"5\r\nhelloX\r\n0\r\n\r\n"),
            Err(ChunkError::BadLineEnd)
        );
        assert_eq!(whole(b"0\r\n\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(whole(b"0\r\nX: y\n\r\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(
            whole(b"0\r\nbad trailer\r\n\r\n"),
            Err(ChunkError::BadTrailer)
        );
        assert_eq!(whole(b"0\r\n: v\r\n\r\n"), Err(ChunkError::BadTrailer));
        assert_eq!(whole(b"0\r\nX: a\x00\r\n\r\n"), Err(ChunkError::BadTrailer));
        assert_eq!(whole(b"-5\r\n"), Err(ChunkError::BadSize));
        assert_eq!(whole(b"+5\r\n"), Err(ChunkError::BadSize));
        assert_eq!(whole(b"0x5\r\n"), Err(ChunkError::BadSize));
        assert_eq!(whole(b"\r\nhello"), Err(ChunkError::BadSize));
        assert_eq!(whole(b";ext\r\n"), Err(ChunkError::BadSize));
        assert_eq!(whole(b"5 5\r\n"), Err(ChunkError::BadSize));
        assert_eq!(whole(b"5 \r\n"), Err(ChunkError::BadSize));
        assert_eq!(whole(b"5;a\x00b\r\n"), Err(ChunkError::BadExtension));
        assert_eq!(whole(b"5;a\nb\r\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(whole(b"5\r\r\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(
            whole(b"00000000000000005\r\n"),
            Err(ChunkError::SizeTooLarge)
        );
        assert_eq!(
            whole(b"4000000000000001\r\n"),
            Err(ChunkError::SizeTooLarge)
        );
        assert_eq!(
            whole(b"ffffffffffffffff\r\n"),
            Err(ChunkError::SizeTooLarge)
        );
        let mut long_ext = b"1;".to_vec();
        long_ext.resize(2 + MAX_EXTENSION as usize + 1, b'a');
        assert_eq!(whole(&long_ext), Err(ChunkError::BadSize));
    }

    #[test]
    fn trailer_limit() {
        let mut body = b"0\r\nX: ".to_vec();
        body.resize(body.len() + 100, b'v');
        body.extend_from_slice(b"\r\n\r\n");
        let trailer = body.len() - 3;
        let mut s = ChunkedScanner::with_max_trailer(trailer);
        assert_eq!(s.feed(&body), Ok((body.len(), true)));
        let mut s = ChunkedScanner::with_max_trailer(trailer - 1);
        assert_eq!(s.feed(&body), Err(ChunkError::TrailerTooLarge));
        let mut huge = b"0\r\nX: ".to_vec();
        huge.resize(MAX_TRAILER + 10, b'v');
        assert_eq!(whole(&huge), Err(ChunkError::TrailerTooLarge));
    }

    #[test]
    fn split_points_do_not_matter() {
        for case in CASES {
            let expect = whole(case);
            // One byte at a time.
            let bytes: Vec<&[u8]> = case.chunks(1).collect();
            assert_eq!(
                drive(&bytes),
                expect,
                "1-byte pieces of {:?}",
                String::from_utf8_lossy(case)
            );
            // Every split into two and three pieces.
            for i in 0..=case.len() {
                assert_eq!(drive(&[&case[..i], &case[i..]]), expect, "split {i}");
                for j in i..=case.len() {
                    assert_eq!(
                        drive(&[&case[..i], &case[i..j], &case[j..]]),
                        expect,
                        "split {i} {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn decoding_yields_the_payload_whatever_the_split() {
        let raw = b"5;x=y\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nT: v\r\n\r\nNEXT";
        for split in 0..=raw.len() {
            let mut s = ChunkedScanner::new();
            let mut body = Vec::new();
            let (a, done_a) = s
                .feed_decoded(&raw[..split], |d| body.extend_from_slice(d))
                .unwrap();
            let (b, done) = s
                .feed_decoded(&raw[split..], |d| body.extend_from_slice(d))
                .unwrap();
            assert!(done_a || a == split);
            assert!(done);
            assert_eq!(a + b, raw.len() - 4);
            assert_eq!(body, b"hello world!");
        }
    }

    #[test]
    fn large_chunk_streams_in_bulk() {
        let mut s = ChunkedScanner::new();
        assert_eq!(s.feed(b"100000\r\n"), Ok((8, false)));
        let block = vec![0u8; 4096];
        for _ in 0..(0x100000 / 4096) {
            assert_eq!(s.feed(&block), Ok((4096, false)));
        }
        assert_eq!(s.feed(b"\r\n0\r\n\r\nHTTP/1.1"), Ok((7, true)));
        assert!(s.is_done());
    }
}
