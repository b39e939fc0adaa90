//! The exchange with an HTTP/2 backend (`h2c://` servers): the second path of
//! [`forward`](super::forward), taken when the request's slot speaks HTTP/2.
//!
//! The front's contract does not change: it gives the HTTP/1.1 head it would send
//! upstream, a [`BodySource`] that writes the body in that head's HTTP/1.1 framing, and a
//! [`ResponseSink`] that takes an HTTP/1.1 response head and body. This module translates
//! at the edge of the backend: the head becomes an `http::Request` (`:authority` from
//! Host, no connection-specific fields, `TE: trailers` only, `Expect` answered already by
//! the front), the body is de-framed into DATA frames sent as the server's flow-control
//! window allows (`BodyWriter`, `h2body.rs`), and the response (status, fields, DATA) is seen by the
//! sink as an HTTP/1.1 response — chunked when it has no `content-length` —
//! (`BodyReader`), unless the sink takes HTTP/2 as it is (`ResponseSink::takes_h2`,
//! the HTTP/2 front): then head, DATA and trailers go across without HTTP/1.1 text.
//! Flow-control capacity is given back to the server only as the sink takes the bytes,
//! so a slow client holds at most one stream window of its response in the proxy.
//!
//! The stream is a lease on a shared connection ([`H2Stream`]): dropping it (the client
//! went away, reset its stream, or the exchange failed) drops the `h2` stream handles, and
//! `h2` resets the backend stream with `CANCEL` if it was still open.
//!
//! Retries: a stream the server never processed (`REFUSED_STREAM`, or above a GOAWAY's
//! `last_stream_id`) is sent again on another connection (a shared one first, then a new
//! one), up to [`MAX_UNPROCESSED_RETRIES`] times, then on another HTTP/2 server of the
//! backend (at most once per other server), whatever the method — no server processed
//! it — as long as none of the request body still to come has been taken from the
//! client; otherwise the usual rule of the module above applies (idempotent, reused
//! connection, nothing received: once, on a fresh connection), and then the backend's
//! `retries`/`retry-on` send an idempotent request with no response byte and no body
//! taken to another server (connect failure, reset or close, timeout of `timeout-try`),
//! as for HTTP/1.1. A retry goes only to a server that speaks HTTP/2 too.
//!
//! The trace notes how the stream's connection was had (shared or pooled: `reused`,
//! taken over, new), so the per-server request counts, connect and first-byte times and
//! the access log cover HTTP/2 backends like HTTP/1.1 ones.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use h2::Reason;
use http::{HeaderMap, HeaderValue, Uri};
use ringway_http1::{self as http1, Framing};

use super::h2body::{BodyReader, BodyWriter};
use super::ResponseSink;
use super::{body_failed, send_body, BodySource, DeliverError, Exchanged, Failure, Request};
use crate::buf::Buf;
use crate::ctx::ShardCtx;
use crate::fields;
use crate::upstream::{AcquireError, Acquired, H2Stream};
use ringway_pool::ServerId;

/// How many times a stream the server did not process is sent again.
pub const MAX_UNPROCESSED_RETRIES: u32 = 3;

/// Request fields never sent over HTTP/2 (RFC 9113 §8.2.2), plus those that become
/// pseudo-headers (`host`) or that the front already answered (`expect`).
const NOT_FORWARDED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "expect",
];
/// Response fields that have no meaning in the HTTP/1.1 form of an HTTP/2 response.
const NOT_RELAYED: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// The upstream head, read once for every attempt.
struct Head {
    method: http::Method,
    uri: Uri,
    headers: HeaderMap,
    framing: Framing,
    /// Body bytes folded into the head (a small complete body).
    folded: usize,
    body_start: usize,
}

impl Head {
    /// Reads the HTTP/1.1 head the front wrote. `None` only if it is not a head at all
    /// (a bug upstream of here, answered 502).
    /// `fallback_authority` is asked only for a request without a `Host` (it formats a
    /// server's address: 2,000 instructions, once per request when it was eager).
    fn parse(raw: &[u8], fallback_authority: impl FnOnce() -> String) -> Option<Head> {
        let parsed = http1::parse_request(raw, raw.len().max(1024)).ok()??;
        let mut slots = [httparse::EMPTY_HEADER; http1::MAX_HEADERS + 16];
        let mut req = httparse::Request::new(&mut slots);
        let httparse::Status::Complete(_) = req.parse(raw).ok()? else {
            return None;
        };
        let method = http::Method::from_bytes(req.method?.as_bytes()).ok()?;
        let target = req.path?;
        let fallback;
        let authority = match parsed
            .host
            .clone()
            .and_then(|r| raw.get(r))
            .filter(|h| !h.is_empty())
            .and_then(|h| std::str::from_utf8(h).ok())
        {
            Some(a) => a,
            None => {
                fallback = fallback_authority();
                fallback.as_str()
            }
        };
        let path = if target.starts_with('/') || target == "*" {
            target.to_string()
        } else {
            // An absolute-form target: its path and query.
            let u: Uri = target.parse().ok()?;
            u.path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string())
        };
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
            .ok()?;
        let mut headers = HeaderMap::with_capacity(req.headers.len());
        // Names from the shard's cache, values slices of one copy of the head: one
        // allocation for the fields instead of one or two per field.
        let mut values = fields::Values::new(&raw[..parsed.head_len.min(raw.len())]);
        for h in req.headers.iter() {
            let Some(name) = fields::name(h.name.as_bytes()) else {
                continue;
            };
            if name == http::header::TE {
                let trailers = h
                    .value
                    .split(|b| *b == b',')
                    .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"trailers"));
                if trailers {
                    headers.insert(name, HeaderValue::from_static("trailers"));
                }
                continue;
            }
            if NOT_FORWARDED.contains(&name.as_str()) {
                continue;
            }
            let Some(value) = values.value(h.value) else {
                continue;
            };
            headers.append(name, value);
        }
        Some(Head {
            method,
            uri,
            headers,
            framing: parsed.framing,
            folded: raw.len() - parsed.head_len,
            body_start: parsed.head_len,
        })
    }

    fn request(&self) -> http::Request<()> {
        let mut r = http::Request::new(());
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }

    /// Whether the request has no body at all.
    fn bodiless(&self) -> bool {
        matches!(self.framing, Framing::Empty | Framing::Length(0))
    }
}

/// How one attempt failed, for the retry decision.
enum Attempt {
    /// The server did not process the stream: safe to send again elsewhere.
    Unprocessed(h2::Error),
    /// Nothing of a response arrived. `conn`: the connection failed (the usual retry
    /// rule may apply); otherwise the server answered the stream with a reset or we
    /// gave up waiting.
    Failed {
        status: u16,
        why: String,
        conn: bool,
    },
    /// What the client gets; no retry.
    Final(Failure),
}

/// Forwards one request to an HTTP/2 backend. See the module docs.
/// Also returns the slot of the last try (a retry may have gone to another server).
pub(super) async fn forward(
    ctx: &ShardCtx,
    req: &Request<'_>,
    src: &mut impl BodySource,
    sink: &mut impl ResponseSink,
    bbuf: &mut Buf,
) -> (Result<Exchanged, Failure>, ServerId) {
    let mut slot = req.slot;
    let r = forward_tries(ctx, req, &mut slot, src, sink, bbuf).await;
    (r, slot)
}

/// Another HTTP/2 server of the backend for a retry (`super::retry_elsewhere`, or, for a
/// stream no server processed, any other server): `None` when there is none, or when
/// the one chosen speaks HTTP/1.1 (a mixed backend: this path cannot send it there).
fn elsewhere(ctx: &ShardCtx, slot: ServerId, next: Option<ServerId>) -> Option<ServerId> {
    next.filter(|&n| n != slot && ctx.upstreams.is_h2(n))
}

async fn forward_tries(
    ctx: &ShardCtx,
    req: &Request<'_>,
    slot: &mut ServerId,
    src: &mut impl BodySource,
    sink: &mut impl ResponseSink,
    bbuf: &mut Buf,
) -> Result<Exchanged, Failure> {
    let Some(head) = Head::parse(req.head, || ctx.upstreams.addr_of(req.slot)) else {
        ctx.metrics.borrow_mut().c.backend_errors += 1;
        return Err(Failure::Answer {
            status: 502,
            close: true,
        });
    };
    let mut fresh = false;
    let mut unprocessed = 0;
    // Tries on other servers: by the backend's `retries` (counted in `tries`), and for
    // streams no server processed, one per other server at most (`moved`).
    let mut tries = 0u32;
    let mut moved = 0usize;
    // A body streamed from the client cannot be sent again.
    let streamed = src.pending();
    loop {
        let asked = glommio::clock::now();
        let stream = match ctx.upstreams.acquire_h2(*slot, fresh).await {
            Ok(s) => s,
            Err(e) => {
                if !matches!(e, AcquireError::Unavailable(_)) {
                    let next = super::retry_elsewhere(ctx, req, *slot, streamed, &mut tries, |r| {
                        r.connect_failure
                    });
                    if let Some(next) = elsewhere(ctx, *slot, next) {
                        *slot = next;
                        fresh = false;
                        unprocessed = 0;
                        continue;
                    }
                }
                return Err(Failure::Answer {
                    status: e.status(),
                    close: src.pending(),
                });
            }
        };
        // How the stream's connection was had, for the per-server figures (requests by
        // connection kind, connect and first-byte times) and the access log.
        let how = if stream.taken_over() {
            Acquired::TakenOver
        } else if stream.reused() {
            Acquired::Pooled
        } else {
            Acquired::Connected(asked.elapsed())
        };
        req.trace.leased_as(how, asked);
        let touched = Cell::new(false);
        let result = attempt(ctx, &stream, &head, req, src, sink, bbuf, &touched).await;
        let failed = match result {
            Ok(ex) => return Ok(ex),
            Err(Attempt::Final(f)) => return Err(f),
            Err(a) => a,
        };
        let reused = stream.reused();
        drop(stream);
        let (status, why, conn_failed) = match failed {
            Attempt::Unprocessed(e) => {
                if !touched.get() && unprocessed < MAX_UNPROCESSED_RETRIES {
                    unprocessed += 1;
                    // A server that caps streams per connection below what it announces
                    // (nginx's keepalive_requests) can refuse a stream on every shared
                    // connection in turn; the first stream of a new one always gets in.
                    fresh = unprocessed >= 2;
                    ctx.metrics.borrow_mut().c.retries += 1;
                    continue;
                }
                // Refused on fresh connections too: no server processed it, so it is
                // safe to send to another one, whatever the method and `retries` say.
                if !touched.get() && moved + 1 < ctx.upstreams.servers_beside(*slot) {
                    let key = crate::upstream::balance::KeySource {
                        head: req.head,
                        path: b"",
                        client: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    };
                    let next = ctx.upstreams.choose_other(*slot, &key);
                    if let Some(next) = elsewhere(ctx, *slot, next) {
                        tracing::debug!(error = %e, "stream refused by every connection of a server: sending it to another server");
                        moved += 1;
                        *slot = next;
                        fresh = false;
                        unprocessed = 0;
                        ctx.metrics.borrow_mut().c.retries += 1;
                        continue;
                    }
                }
                (502, e.to_string(), false)
            }
            Attempt::Failed { status, why, conn } => (status, why, conn),
            Attempt::Final(f) => return Err(f),
        };
        // The usual rule: only a connection that failed (closed while it sat idle), not a
        // stream the server answered with a reset.
        let retryable = conn_failed
            && status == 502
            && reused
            && !fresh
            && !touched.get()
            && !src.pending()
            && req.method.is_idempotent();
        if retryable {
            tracing::debug!(error = %why, "retrying on a fresh HTTP/2 connection");
            fresh = true;
            ctx.metrics.borrow_mut().c.retries += 1;
            continue;
        }
        // Another server, by the backend's `retries` and `retry-on`, as for HTTP/1.1:
        // idempotent, no body taken from the client, no response byte.
        if (status == 502 || status == 504) && !touched.get() {
            let on: fn(&crate::config::values::RetryOn) -> bool = if status == 504 {
                |r| r.timeout
            } else {
                |r| r.reset
            };
            let next = super::retry_elsewhere(ctx, req, *slot, streamed, &mut tries, on);
            if let Some(next) = elsewhere(ctx, *slot, next) {
                tracing::debug!(error = %why, "retrying on another HTTP/2 server");
                *slot = next;
                fresh = false;
                unprocessed = 0;
                continue;
            }
        }
        tracing::debug!(error = %why, status, "HTTP/2 backend failed before responding");
        let mut m = ctx.metrics.borrow_mut();
        if status == 504 {
            m.c.backend_timeouts += 1;
        } else {
            m.c.backend_errors += 1;
        }
        return Err(Failure::Answer {
            status,
            close: src.pending() || touched.get(),
        });
    }
}

/// Classifies an `h2` error seen before the response head.
fn before_head(stream: &H2Stream, e: h2::Error, idempotent: bool) -> Attempt {
    if e.is_go_away() || e.is_io() || (e.is_library() && !e.is_reset()) {
        stream.mark_dead();
    }
    let refused = e.reason() == Some(Reason::REFUSED_STREAM) && e.is_remote();
    // A graceful GOAWAY fails only the streams above its last_stream_id; one with an
    // error may fail processed streams too, which only an idempotent request survives.
    let above_last =
        e.is_go_away() && e.is_remote() && (e.reason() == Some(Reason::NO_ERROR) || idempotent);
    if refused || above_last {
        Attempt::Unprocessed(e)
    } else {
        Attempt::Failed {
            status: 502,
            why: e.to_string(),
            conn: e.is_io() || e.is_go_away(),
        }
    }
}

/// Runs the first of two futures that ends; `None` when `limit` passes first.
async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// One try on one stream: open it, send the body while the response comes back.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    ctx: &ShardCtx,
    stream: &H2Stream,
    head: &Head,
    req: &Request<'_>,
    src: &mut impl BodySource,
    sink: &mut impl ResponseSink,
    bbuf: &mut Buf,
    touched: &Cell<bool>,
) -> Result<Exchanged, Attempt> {
    let cfg = ctx.config();
    // The backend's own bound for one try (`timeout-try`, else `timeout-backend`).
    let backend_timeout = ctx
        .upstreams
        .backend_of(stream.slot())
        .map_or(cfg.timeouts.backend, |b| {
            b.timeout_try.unwrap_or(b.timeout_backend)
        });
    let body_time = cfg.timeouts.client_body;
    let idempotent = req.method.is_idempotent();
    let mut send = stream.sender();
    // h2 holds a new stream here while the server's SETTINGS_MAX_CONCURRENT_STREAMS is
    // reached on this connection.
    match within(backend_timeout, poll_fn(|cx| send.poll_ready(cx))).await {
        None => {
            return Err(Attempt::Failed {
                status: 504,
                why: "no free HTTP/2 stream within --timeout-backend".into(),
                conn: false,
            })
        }
        Some(Err(e)) => {
            stream.mark_dead();
            return Err(Attempt::Unprocessed(e));
        }
        Some(Ok(())) => {}
    }
    let end = head.bodiless() && !src.pending();
    let (response, body_tx) = match send.send_request(head.request(), end) {
        Ok(x) => x,
        Err(e) => {
            stream.mark_dead();
            return Err(Attempt::Unprocessed(e));
        }
    };
    bbuf.clear();

    let mut writer = BodyWriter::new(body_tx, head.framing, touched);
    let folded = &req.head[head.body_start..head.body_start + head.folded];
    let upload = async {
        if end {
            return Ok(());
        }
        if !folded.is_empty() {
            writer
                .write_all(folded)
                .await
                .map_err(super::BodyError::Backend)?;
            // Folded bytes came with the head: taking them is no reason not to retry.
            touched.set(false);
        }
        if src.pending() {
            send_body(src, &mut writer, body_time).await?;
        }
        writer.finish().await.map_err(super::BodyError::Backend)
    };
    let download = async {
        let got = {
            let mut waiting = pin!(within(backend_timeout, response));
            poll_fn(|cx| {
                if let Poll::Ready(r) = waiting.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                sink.poll_gone(cx).map(|()| None)
            })
            .await
        };
        let resp = match got {
            None => return Err(Attempt::Final(Failure::ClientGone)),
            Some(None) => {
                return Err(Attempt::Failed {
                    status: 504,
                    why: "no response head within --timeout-backend".into(),
                    conn: false,
                })
            }
            Some(Some(Err(e))) => return Err(before_head(stream, e, idempotent)),
            Some(Some(Ok(r))) => r,
        };
        let (parts, recv) = resp.into_parts();
        if sink.takes_h2() {
            // HTTP/2 on both sides: the head and the body go across as they came.
            let status = parts.status.as_u16();
            return match sink.deliver_h2(parts, recv, backend_timeout).await {
                Ok(keep_alive) => Ok((status, keep_alive)),
                Err(e) => Err(Attempt::Final(Failure::Broken {
                    status,
                    client_gone: matches!(e, DeliverError::ClientGone),
                })),
            };
        }
        let mut text = Vec::with_capacity(256);
        write_h1_response(&parts, req.method, &mut text);
        bbuf.put(&text);
        let parsed =
            http1::parse_response_with(bbuf.data(), req.method, text.len() + 1, |f| sink.head(f));
        let rh = match parsed {
            Ok(Some((h, ()))) => h,
            _ => {
                return Err(Attempt::Failed {
                    status: 502,
                    why: "an HTTP/2 response head that cannot be said in HTTP/1.1".into(),
                    conn: false,
                })
            }
        };
        let mut reader = BodyReader::new(recv, rh.framing == Framing::Chunked, backend_timeout);
        match sink.deliver(&rh, bbuf, &mut reader).await {
            Ok(keep_alive) => Ok((rh.status, keep_alive)),
            Err(e) => Err(Attempt::Final(Failure::Broken {
                status: rh.status,
                client_gone: matches!(e, DeliverError::ClientGone),
            })),
        }
    };
    let mut upload = pin!(upload);
    let mut download = pin!(download);
    let mut uploaded: Option<Result<(), super::BodyError>> = None;
    let relayed = poll_fn(|cx| {
        if uploaded.is_none() {
            if let Poll::Ready(r) = upload.as_mut().poll(cx) {
                uploaded = Some(r);
            }
        }
        if let Some(Err(
            super::BodyError::Client | super::BodyError::Framing | super::BodyError::TooSlow,
        )) = &uploaded
        {
            return Poll::Ready(None);
        }
        download.as_mut().poll(cx).map(Some)
    })
    .await;
    match (relayed, uploaded) {
        (Some(Ok((status, keep_alive))), done) => Ok(Exchanged {
            status,
            client_keep_alive: keep_alive && matches!(done, Some(Ok(()))),
            upgraded: None,
        }),
        (
            Some(Err(Attempt::Final(Failure::Broken {
                status,
                client_gone,
            }))),
            _,
        ) => {
            let mut m = ctx.metrics.borrow_mut();
            if client_gone {
                m.c.client_aborts += 1;
            } else {
                m.c.backend_errors += 1;
            }
            Err(Attempt::Final(Failure::Broken {
                status,
                client_gone,
            }))
        }
        (Some(Err(Attempt::Final(Failure::ClientGone))), _) => {
            ctx.metrics.borrow_mut().c.client_aborts += 1;
            Err(Attempt::Final(Failure::ClientGone))
        }
        (Some(Err(a)), _) => Err(a),
        (None, Some(Err(e))) => Err(Attempt::Final(body_failed(ctx, e))),
        (None, _) => Err(Attempt::Final(Failure::ClientGone)),
    }
}

/// The HTTP/1.1 form of an HTTP/2 response head: status line, fields, and
/// `transfer-encoding: chunked` when a body follows without a `content-length`.
fn write_h1_response(parts: &http::response::Parts, method: http1::Method, out: &mut Vec<u8>) {
    let status = parts.status.as_u16();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(http1::reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if NOT_RELAYED.contains(&name.as_str()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let no_body = method == http1::Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304;
    if !no_body && !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_to_h2() {
        let raw = b"POST /p?q=1 HTTP/1.1\r\nHost: a.example:8080\r\nConnection: keep-alive\r\n\
            TE: trailers, deflate\r\nExpect: 100-continue\r\nContent-Length: 3\r\nX-Y: z\r\n\
            X-Multi: a\r\nx-MULTI: b c\r\n\r\nabc";
        // With a Host, the fallback is never asked for (it formats an address).
        let h = Head::parse(raw, || unreachable!("a Host was there")).unwrap();
        assert_eq!(h.method, http::Method::POST);
        assert_eq!(h.uri.to_string(), "http://a.example:8080/p?q=1");
        assert_eq!(h.framing, Framing::Length(3));
        assert_eq!(h.folded, 3);
        assert_eq!(h.headers["te"], "trailers");
        assert_eq!(h.headers["x-y"], "z");
        // Names in any case are one field; values are the head's own, in order.
        let multi: Vec<_> = h.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b c"]);
        for gone in ["connection", "expect", "host", "transfer-encoding"] {
            assert!(!h.headers.contains_key(gone), "{gone}");
        }
        let h = Head::parse(b"GET / HTTP/1.0\r\nHost: \r\n\r\n", || "10.0.0.1:80".into()).unwrap();
        assert_eq!(h.uri.authority().map(|a| a.as_str()), Some("10.0.0.1:80"));
        assert!(h.bodiless());
        assert!(Head::parse(b"not a head", || "x:1".into()).is_none());
    }

    #[test]
    fn response_head_as_h1() {
        let mut r = http::Response::builder()
            .status(200)
            .header("server", "o")
            .body(())
            .unwrap();
        let (parts, ()) = r.into_parts();
        let mut out = Vec::new();
        write_h1_response(&parts, http1::Method::Get, &mut out);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 200 OK\r\nserver: o\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let h = http1::parse_response(&out, http1::Method::Get, 8192)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        r = http::Response::builder().status(204).body(()).unwrap();
        let (parts, ()) = r.into_parts();
        out.clear();
        write_h1_response(&parts, http1::Method::Get, &mut out);
        assert!(!String::from_utf8(out).unwrap().contains("chunked"));
    }
}
