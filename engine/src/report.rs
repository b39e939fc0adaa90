//! A finished request, reported once: [`done`] is the one call each front makes where
//! it used to record status and latency. From the facts the request's
//! [`Trace`] noted it updates the shard's metrics (status class, duration by backend,
//! the server's responses, bytes, connection kind, connect and first-byte times,
//! errors by kind), logs a backend error (rate-limited, with backend, server and what
//! failed) and appends the access log line.

use crate::access_log::LineFacts;
use crate::ctx::ShardCtx;
use crate::trace::{Term, Trace};
use crate::upstream::Acquired;

/// Reports one finished request with the status the client got (499: it went away).
pub fn done(ctx: &ShardCtx, t: &Trace, status: u16) {
    let now = glommio::clock::now();
    if t.term.get() == Term::Normal && t.lease.get().is_none() && status >= 400 && status != 499 {
        // Answered without a backend: no route, a refused request.
        t.answered_locally();
    }
    let took = now.saturating_duration_since(t.received.get());
    let server = t
        .slot
        .get()
        .and_then(|s| ctx.upstreams.table().server_of_slot(s));
    let config = ctx.config();
    let backend = t
        .backend
        .get()
        .and_then(|b| config.backends.get(b))
        .map(|b| b.name.as_str());
    {
        let mut m = ctx.metrics.borrow_mut();
        // 499: the client went away; nothing was sent, nothing to count as a response.
        if status != 499 {
            m.record_status(status);
        }
        let b = t.backend.get().map_or(0, |b| b + 1);
        if let Some(h) = m.request.get_mut(b) {
            h.record(took);
        }
        if let Some(sf) = t.slot.get().and_then(|s| m.servers.get_mut(s.index())) {
            let class = (status / 100) as usize;
            if status != 499 && (1..=5).contains(&class) {
                sf.responses[class] += 1;
            }
            sf.bytes_in += t.bytes_in.get();
            sf.bytes_out += t.bytes_out.get();
            if let Some(kind) = t.term.get().server_error() {
                sf.errors[kind as usize] += 1;
            }
            if let Some(l) = t.lease.get() {
                let k = match l.how {
                    Acquired::Pooled => 0,
                    Acquired::TakenOver => 1,
                    Acquired::Connected(d) => {
                        sf.connect.record(d);
                        2
                    }
                };
                sf.requests[k] += 1;
                if let Some(first) = t.first_byte.get() {
                    sf.ttfb
                        .record(first.saturating_duration_since(t.received.get()));
                }
            }
        }
    }
    if let Some(kind) = t.term.get().server_error() {
        if let Some(suppressed) = ctx.backend_warn.allow() {
            tracing::warn!(
                shard = ctx.id,
                backend = %backend.unwrap_or("-"),
                server = %server.map_or_else(|| "-".to_string(), |a| a.to_string()),
                error = %kind.name(),
                status,
                suppressed,
                "backend error: {}",
                kind.what()
            );
        }
    }
    if ctx.access_log.enabled() {
        let dropped = ctx.access_log.log(
            t,
            &LineFacts {
                status,
                done: now,
                backend,
                server,
            },
        );
        let mut m = ctx.metrics.borrow_mut();
        m.c.access_log_lines += 1;
        m.c.access_log_dropped += dropped;
    }
}

/// Hands the shard's partly filled access log buffer to the writer (the shard's flush
/// tick, and the end of a drain).
pub fn flush_access_log(ctx: &ShardCtx) {
    let dropped = ctx.access_log.flush();
    if dropped > 0 {
        ctx.metrics.borrow_mut().c.access_log_dropped += dropped;
    }
}
