//! A sans-IO decoder for `Transfer-Encoding: chunked` request bodies.
//!
//! It takes whatever bytes are at hand and says how many it consumed and whether they
//! held body data (as a range of the input, so nothing is copied), the end of the body,
//! or nothing yet. It never buffers: chunk extensions and trailers are skipped byte by
//! byte, so a body of any size streams through a fixed read buffer.

/// What one call to [`ChunkedDecoder::step`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `input[start..start + len]` is body data.
    Data { start: usize, len: usize },
    /// The last chunk and the trailers are consumed: the body is over.
    Done,
    /// All input was consumed without data; read more.
    NeedMore,
}

/// Why a chunked body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedError(pub &'static str);

impl std::fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size (`digits` read so far).
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: an extension or whitespace until CR.
    Ext {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerLineLf,
    EndLf,
    Done,
}

/// Decoder state for one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
        }
    }
}

impl ChunkedDecoder {
    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes a prefix of `input`; returns how many bytes and what they held.
    pub fn step(&mut self, input: &[u8]) -> Result<(usize, Step), ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                return Ok((i, Step::Done));
            }
            if let State::Data { remaining } = self.state {
                let len = (input.len() - i).min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let left = remaining - len as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining: left }
                };
                return Ok((i + len, Step::Data { start: i, len }));
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                State::Size { size, digits } => match hex(b) {
                    Some(d) => {
                        if digits >= 16 {
                            return Err(ChunkedError("chunk size too large"));
                        }
                        State::Size {
                            size: (size << 4) | u64::from(d),
                            digits: digits + 1,
                        }
                    }
                    None if digits == 0 => return Err(ChunkedError("missing chunk size")),
                    None => match b {
                        b'\r' => State::SizeLf { size },
                        b';' | b' ' | b'\t' => State::Ext { size },
                        _ => return Err(ChunkedError("bad chunk size")),
                    },
                },
                State::Ext { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(ChunkedError("bare LF after chunk size")),
                    _ => State::Ext { size },
                },
                State::SizeLf { size } => match (b, size) {
                    (b'\n', 0) => State::TrailerLineStart,
                    (b'\n', size) => State::Data { remaining: size },
                    _ => return Err(ChunkedError("expected LF after chunk size")),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(ChunkedError("expected CRLF after chunk data")),
                },
                State::DataLf => match b {
                    b'\n' => State::Size { size: 0, digits: 0 },
                    _ => return Err(ChunkedError("expected LF after chunk data")),
                },
                State::TrailerLineStart => match b {
                    b'\r' => State::EndLf,
                    _ => State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLineLf,
                    _ => State::TrailerLine,
                },
                State::TrailerLineLf => match b {
                    b'\n' => State::TrailerLineStart,
                    _ => return Err(ChunkedError("expected LF in trailer")),
                },
                State::EndLf => match b {
                    b'\n' => {
                        self.state = State::Done;
                        return Ok((i, Step::Done));
                    }
                    _ => return Err(ChunkedError("expected LF at end of body")),
                },
                // Both are handled before a byte is taken.
                state @ (State::Data { .. } | State::Done) => state,
            };
        }
        if self.state == State::Done {
            return Ok((i, Step::Done));
        }
        Ok((i, Step::NeedMore))
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; returns the body and leftover.
    fn decode(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + piece).min(input.len());
            let (used, step) = d.step(&input[pos..end])?;
            if let Step::Data { start, len } = step {
                out.extend_from_slice(&input[pos + start..pos + start + len]);
            }
            pos += used;
            if step == Step::Done {
                return Ok((out, input.len() - pos));
            }
        }
        Err(ChunkedError("incomplete"))
    }

    #[test]
    fn decodes_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for piece in 1..body.len() {
            let (out, left) = decode(body, piece).unwrap();
            assert_eq!(out, b"hello0123456789");
            assert_eq!(left, 4, "piece {piece}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\nhello",
            b"11111111111111111\r\n",
            b"0\r\nX\rY",
        ] {
            assert!(
                decode(bad, 3).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn empty_body() {
        assert_eq!(decode(b"0\r\n\r\n", 1).unwrap(), (vec![], 0));
    }
}
