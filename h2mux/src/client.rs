//! The HTTP/2 client side: the prior-knowledge (h2c) handshake over any futures-io stream
//! (glommio's `TcpStream` in ringway), with the limits ringway announces to servers.
//!
//! Nothing here knows about pooling: the caller keeps the [`SendRequest`] handle (cloned
//! for each stream) and must drive the returned [`Connection`] on a task of its own; the
//! connection ends gracefully (GOAWAY) once every handle and stream is gone. Sending a
//! body under flow control is [`crate::server::send_body`], which works on any
//! `SendStream`.

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use h2::client::SendRequest;

use crate::io::TokioIo;

/// The client connection type: `h2` over a stream seen through [`TokioIo`].
pub type Connection<T> = h2::client::Connection<TokioIo<T>, Bytes>;

/// What ringway announces to (and assumes of) a backend server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much of a response body a server may send on
    /// one stream before ringway passes it on to the client.
    pub stream_window: u32,
    /// The connection-level receive window.
    pub connection_window: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE for response heads.
    pub max_header_list_size: u32,
    /// Streams assumed allowed until the server's SETTINGS say otherwise.
    pub initial_max_send_streams: usize,
    /// Bytes a stream may have queued for sending beyond what flow control lets out.
    pub max_send_buffer: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            stream_window: 1 << 20,
            connection_window: 4 << 20,
            max_header_list_size: 64 << 10,
            initial_max_send_streams: 100,
            max_send_buffer: 256 << 10,
        }
    }
}

/// Runs the client handshake (the preface and our SETTINGS) on `io`. The server's
/// SETTINGS arrive later, while the connection is driven.
pub async fn handshake<T>(
    io: T,
    settings: &ClientSettings,
) -> Result<(SendRequest<Bytes>, Connection<T>), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut b = h2::client::Builder::new();
    b.initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_header_list_size(settings.max_header_list_size)
        .initial_max_send_streams(settings.initial_max_send_streams)
        .max_send_buffer_size(settings.max_send_buffer)
        .enable_push(false);
    b.handshake(TokioIo::new(io)).await
}
