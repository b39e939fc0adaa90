//! The HTTP/2 server side: recognising the h2c preface, the server handshake over any
//! futures-io stream (glommio's `TcpStream` in ringway) with bytes already read from it,
//! and sending a body under HTTP/2 flow control.
//!
//! Nothing here knows about the proxy: the caller accepts streams from the returned
//! [`Connection`] and decides what each one means. `h2` has no timers; deadlines (the
//! handshake, idle connections) are the caller's, with glommio timers.

use std::future::poll_fn;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use h2::SendStream;

use crate::io::TokioIo;
use crate::rewind::Rewind;

/// The HTTP/2 connection preface a client with prior knowledge starts with (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `buf` (a connection's first bytes) is the start of [`PREFACE`], or all of it
/// followed by more: the client speaks HTTP/2. False for an empty `buf`.
pub fn starts_with_preface(buf: &[u8]) -> bool {
    let n = buf.len().min(PREFACE.len());
    n > 0 && buf[..n] == PREFACE[..n]
}

/// The server connection type: `h2` over a [`Rewind`] stream seen through [`TokioIo`].
pub type Connection<T> = h2::server::Connection<TokioIo<Rewind<T>>, Bytes>;

/// The limits announced to clients in SETTINGS and enforced on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: what a client may send on one stream unacknowledged.
    pub stream_window: u32,
    /// The connection-level receive window (raised with WINDOW_UPDATE after the preface).
    pub connection_window: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE; a larger request head is refused with 431 by `h2`.
    pub max_header_list_size: u32,
    /// Bytes a stream may have queued for sending beyond what flow control lets out.
    pub max_send_buffer: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_concurrent_streams: 256,
            stream_window: 1 << 20,
            connection_window: 4 << 20,
            max_header_list_size: 64 << 10,
            max_send_buffer: 256 << 10,
        }
    }
}

/// Why an HTTP/2 exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The handshake or the connection failed (bad preface, I/O error, protocol error).
    #[error("HTTP/2 connection error: {0}")]
    Connection(#[source] h2::Error),
    /// The stream was reset or can no longer send (the client went away or cancelled).
    #[error("HTTP/2 stream error: {0}")]
    Stream(#[source] h2::Error),
    /// The stream closed before all its data could be sent.
    #[error("HTTP/2 stream closed while sending")]
    StreamClosed,
}

/// Runs the server handshake on `io`, whose first bytes (`prefix`) were already read by
/// the caller: they are replayed to `h2` first. Returns the connection to accept streams
/// from once the client's preface and SETTINGS are in.
pub async fn handshake<T>(
    io: T,
    prefix: Vec<u8>,
    settings: &Settings,
) -> Result<Connection<T>, ServerError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(settings.max_concurrent_streams)
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_header_list_size(settings.max_header_list_size)
        .max_send_buffer_size(settings.max_send_buffer);
    b.handshake(TokioIo::new(Rewind::new(io, prefix)))
        .await
        .map_err(ServerError::Connection)
}

/// Sends `data` on `send` as flow control allows: capacity is reserved and awaited
/// before each DATA frame, so no more than the peer's window is ever queued. With `end`,
/// the last frame ends the stream (an empty `data` with `end` just ends it).
pub async fn send_body(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), ServerError> {
    if data.is_empty() {
        if end {
            send.send_data(Bytes::new(), true)
                .map_err(ServerError::Stream)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let cap = loop {
            match poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(0)) => continue,
                Some(Ok(n)) => break n,
                Some(Err(e)) => return Err(ServerError::Stream(e)),
                None => return Err(ServerError::StreamClosed),
            }
        };
        let piece = data.split_to(cap.min(data.len()));
        let last = end && data.is_empty();
        send.send_data(piece, last).map_err(ServerError::Stream)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_detection() {
        assert!(starts_with_preface(b"P"));
        assert!(starts_with_preface(b"PRI * HTTP/2.0\r\n"));
        assert!(starts_with_preface(PREFACE));
        assert!(starts_with_preface(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04"
        ));
        assert!(!starts_with_preface(b""));
        assert!(!starts_with_preface(b"GET / HTTP/1.1\r\n"));
        assert!(!starts_with_preface(b"PRI * HTTP/1.1\r\n"));
        assert!(!starts_with_preface(b"POST / HTTP/1.1\r\n"));
    }
}
