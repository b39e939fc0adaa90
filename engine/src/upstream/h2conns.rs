//! Shared HTTP/2 backend connections of one shard: the pool's `avail` notion for the
//! slots whose key says `Proto::Http2` (`h2c://` servers).
//!
//! An HTTP/1.1 connection is lent whole to one request; an HTTP/2 connection is one
//! object ([`H2Conn`]: an `h2` `SendRequest` plus a task driving the `h2` `Connection`)
//! that many requests use at once, each through an [`H2Stream`] lease. For each slot this
//! module keeps the list of live connections. A request takes a stream on the oldest one
//! that has a free stream (fewer open than the server's SETTINGS_MAX_CONCURRENT_STREAMS,
//! and fewer uses than `--max-reuse`); only when none has one is a connection opened, and
//! at most one connect per slot is in progress for that need: the requests that find one
//! in progress wait for it, as in hyper's pool.
//!
//! A connection that saw GOAWAY, a protocol or I/O error, or whose driver ended is
//! *dead*: it leaves the list at once and is never picked again; its open streams finish
//! on it. A connection without open streams is closed by the purge after
//! `--pool-purge-delay` idle, at shutdown and when its server is marked down; closing
//! means dropping the last `SendRequest`, after which `h2` sends GOAWAY and ends the
//! driver. Idle health is a PING with a deadline, sent by the sweep
//! ([`Upstreams::ping_idle_h2`]). HTTP/2 connections are never taken over by other
//! shards (not yet).
//!
//! It must never hold a connection in the list that cannot take a stream for a reason
//! other than being full, and never count a connection twice in the shard's total.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use ringway_h2mux::client::{self as h2client, ClientSettings};
use ringway_pool::{ReuseMode, ServerId};

use super::{AcquireError, Upstreams};

/// One HTTP/2 connection to a backend server, shared by the streams on it.
pub struct H2Conn {
    send: SendRequest<Bytes>,
    slot: ServerId,
    /// Streams leased on it now.
    open: Cell<usize>,
    /// Streams it has carried (for `--max-reuse`).
    uses: Cell<u32>,
    /// GOAWAY, a connection error, or the driver ended: never picked again.
    dead: Rc<Cell<bool>>,
    /// When `open` last fell to zero (or the connection was made).
    idle_since: Cell<Instant>,
    /// Still counted in the shard's backend connections.
    counted: Cell<bool>,
    /// Our PING handle (`None` while a health check holds it).
    ping: RefCell<Option<h2::PingPong>>,
}

/// An HTTP/2 connection idle this long is checked with a PING at the next sweep.
pub const H2_PING_AFTER: Duration = Duration::from_secs(1);
/// How long the server has to answer that PING before the connection is closed.
pub const H2_PING_DEADLINE: Duration = Duration::from_secs(1);

/// What one slot has: its live connections and the connect in progress, if any.
#[derive(Default)]
struct SlotConns {
    live: Vec<Rc<H2Conn>>,
    connecting: bool,
    /// Requests waiting for the connect in progress.
    waiters: Vec<Waker>,
    /// Connects finished, and the status of the last one when it failed.
    generation: u64,
    last_failure: Option<(u64, u16)>,
}

/// The HTTP/2 connections of one shard, by slot.
pub(super) struct H2Pool {
    slots: RefCell<Vec<SlotConns>>,
}

impl H2Pool {
    pub(super) fn new(n_slots: usize) -> H2Pool {
        H2Pool {
            slots: RefCell::new((0..n_slots).map(|_| SlotConns::default()).collect()),
        }
    }
}

/// A stream lent to one request on a shared HTTP/2 connection. Dropping it gives the
/// stream back (and closes a connection nobody may use any more).
pub struct H2Stream {
    ups: Rc<Upstreams>,
    conn: Rc<H2Conn>,
    reused: bool,
}

impl H2Stream {
    /// A handle to open the stream with (a clone of the connection's `SendRequest`).
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.conn.send.clone()
    }

    /// The connection had carried a stream before this one.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// The connection got GOAWAY or failed: no new stream goes on it.
    pub fn mark_dead(&self) {
        self.conn.dead.set(true);
        self.ups.retire_h2(&self.conn);
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        let c = &self.conn;
        let open = c.open.get().saturating_sub(1);
        c.open.set(open);
        if open == 0 {
            c.idle_since.set(Instant::now());
            let worn = self.ups.knobs.max_reuse.is_some_and(|m| c.uses.get() >= m);
            let private = self.ups.knobs.reuse == ReuseMode::Never;
            if c.dead.get() || worn || private {
                self.ups.retire_h2(c);
            }
        }
    }
}

/// Ends the "connect in progress" of a slot however the connect ends (cancelled too),
/// waking the requests that wait for it.
struct Connecting<'a> {
    ups: &'a Upstreams,
    slot: ServerId,
    failed: Option<u16>,
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        let mut slots = self.ups.h2.slots.borrow_mut();
        if let Some(s) = slots.get_mut(self.slot.index()) {
            s.connecting = false;
            s.generation += 1;
            if let Some(status) = self.failed {
                s.last_failure = Some((s.generation, status));
            }
            for w in s.waiters.drain(..) {
                w.wake();
            }
        }
    }
}

impl Upstreams {
    /// Whether `slot`'s connections speak HTTP/2.
    pub fn is_h2(&self, slot: ServerId) -> bool {
        self.table
            .keys
            .key(slot)
            .is_some_and(|k| k.proto == ringway_pool::Proto::Http2)
    }

    /// A stream for a request to an HTTP/2 slot: on a live connection with a free
    /// stream, else on a new one (waiting for a connect already in progress first).
    /// `fresh` forces a new connection (a retry after a reused one failed).
    pub async fn acquire_h2(
        self: &Rc<Self>,
        slot: ServerId,
        fresh: bool,
    ) -> Result<H2Stream, AcquireError> {
        let shared = self.knobs.reuse != ReuseMode::Never;
        loop {
            if !fresh && shared {
                if let Some(conn) = self.pick_h2(slot) {
                    return Ok(self.lend(conn, true));
                }
                let in_progress = self
                    .h2
                    .slots
                    .borrow()
                    .get(slot.index())
                    .is_some_and(|s| s.connecting);
                if in_progress {
                    if let Some(status) = self.wait_connect(slot).await {
                        return Err(match status {
                            504 => AcquireError::Timeout,
                            502 => AcquireError::Refused(io::Error::other(
                                "the connect this request waited for failed",
                            )),
                            _ => AcquireError::Unavailable("the connect waited for failed"),
                        });
                    }
                    continue;
                }
            }
            let mut guard = Connecting {
                ups: self,
                slot,
                failed: None,
            };
            if let Some(s) = self.h2.slots.borrow_mut().get_mut(slot.index()) {
                s.connecting = true;
            }
            let conn = match self.connect_h2(slot).await {
                Ok(c) => c,
                Err(e) => {
                    guard.failed = Some(e.status());
                    return Err(e);
                }
            };
            if shared {
                if let Some(s) = self.h2.slots.borrow_mut().get_mut(slot.index()) {
                    s.live.push(conn.clone());
                }
            }
            drop(guard);
            return Ok(self.lend(conn, false));
        }
    }

    fn lend(self: &Rc<Self>, conn: Rc<H2Conn>, reused: bool) -> H2Stream {
        conn.open.set(conn.open.get() + 1);
        conn.uses.set(conn.uses.get() + 1);
        H2Stream {
            ups: self.clone(),
            conn,
            reused,
        }
    }

    /// Waits until the connect in progress for `slot` ends; its status if it failed.
    async fn wait_connect(&self, slot: ServerId) -> Option<u16> {
        let start = self
            .h2
            .slots
            .borrow()
            .get(slot.index())
            .map_or(0, |s| s.generation);
        poll_fn(|cx| {
            let mut slots = self.h2.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot.index()) else {
                return Poll::Ready(None);
            };
            if s.generation != start || !s.connecting {
                return Poll::Ready(match s.last_failure {
                    Some((g, status)) if g > start => Some(status),
                    _ => None,
                });
            }
            s.waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The oldest live connection of `slot` with a free stream; dead ones leave the list.
    fn pick_h2(&self, slot: ServerId) -> Option<Rc<H2Conn>> {
        let max_reuse = self.knobs.max_reuse;
        let mut dead = Vec::new();
        let picked = {
            let slots = self.h2.slots.borrow();
            let s = slots.get(slot.index())?;
            let mut picked = None;
            for c in &s.live {
                if c.dead.get() {
                    dead.push(c.clone());
                    continue;
                }
                let limit = c.send.current_max_send_streams();
                let worn = max_reuse.is_some_and(|m| c.uses.get() >= m);
                if !worn && c.open.get() < limit {
                    picked = Some(c.clone());
                    break;
                }
            }
            picked
        };
        for c in dead {
            self.retire_h2(&c);
        }
        picked
    }

    /// Opens a TCP connection to `slot`'s server and runs the HTTP/2 handshake on it;
    /// spawns the task that drives the connection.
    async fn connect_h2(&self, slot: ServerId) -> Result<Rc<H2Conn>, AcquireError> {
        let conn = self.connect(slot).await?;
        let settings = ClientSettings {
            max_header_list_size: self.knobs.max_head,
            ..ClientSettings::default()
        };
        conn.transport.set_timeouts(None);
        let handshake = glommio::timer::timeout(self.knobs.connect_timeout, async {
            Ok(h2client::handshake(conn.transport, &settings).await)
        })
        .await;
        let (send, mut driver) = match handshake {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                self.pool.borrow_mut().released(slot);
                self.forget_conn();
                tracing::debug!(error = %e, "HTTP/2 handshake with a backend failed");
                return Err(AcquireError::Refused(io::Error::other(e)));
            }
            Err(_) => {
                self.pool.borrow_mut().released(slot);
                self.forget_conn();
                return Err(AcquireError::Timeout);
            }
        };
        // The server's SETTINGS (SETTINGS_MAX_CONCURRENT_STREAMS above all) come before
        // its answer to our first PING: until then the connection is not offered, so no
        // stream is ever opened over a limit we have not heard yet.
        let ping = driver.ping_pong();
        let dead = Rc::new(Cell::new(false));
        let ended = dead.clone();
        glommio::spawn_local(async move {
            if let Err(e) = driver.await {
                let normal =
                    matches!(e.get_io(), Some(io) if io.kind() == io::ErrorKind::NotConnected);
                if !normal {
                    tracing::debug!(error = %e, "HTTP/2 backend connection ended");
                }
            }
            ended.set(true);
        })
        .detach();
        let mut ping = ping;
        if let Some(ping) = ping.as_mut() {
            let pong = glommio::timer::timeout(self.knobs.connect_timeout, async {
                Ok(ping.ping(h2::Ping::opaque()).await)
            })
            .await;
            let failed = match pong {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(AcquireError::Refused(io::Error::other(e))),
                Err(_) => Some(AcquireError::Timeout),
            };
            if let Some(e) = failed {
                // Dropping `send` ends the driver; the connection was counted: uncount it.
                self.pool.borrow_mut().released(slot);
                self.forget_conn();
                tracing::debug!(error = ?e, "HTTP/2 backend did not answer its first PING");
                return Err(e);
            }
        }
        Ok(Rc::new(H2Conn {
            send,
            slot,
            open: Cell::new(0),
            uses: Cell::new(0),
            dead,
            idle_since: Cell::new(Instant::now()),
            counted: Cell::new(true),
            ping: RefCell::new(ping),
        }))
    }

    /// Takes a connection out of its slot's list and out of the shard's count (once).
    /// Its streams still open finish on it; `h2` closes it when the last handle goes.
    pub(super) fn retire_h2(&self, conn: &Rc<H2Conn>) {
        if let Some(s) = self.h2.slots.borrow_mut().get_mut(conn.slot.index()) {
            s.live.retain(|c| !Rc::ptr_eq(c, conn));
        }
        if conn.counted.replace(false) {
            self.pool.borrow_mut().released(conn.slot);
            self.forget_conn();
        }
    }

    /// Closes the HTTP/2 connections that `keep` says no to, among those without open
    /// streams (and every dead one).
    pub(super) fn close_idle_h2(&self, keep: impl Fn(&H2Conn) -> bool) {
        let closing: Vec<Rc<H2Conn>> = self
            .h2
            .slots
            .borrow()
            .iter()
            .flat_map(|s| s.live.iter())
            .filter(|c| c.dead.get() || (c.open.get() == 0 && !keep(c)))
            .cloned()
            .collect();
        for c in closing {
            self.retire_h2(&c);
        }
    }

    /// The idle health check for HTTP/2: every connection without streams for
    /// [`H2_PING_AFTER`] gets a PING, all at once, and one that does not answer within
    /// [`H2_PING_DEADLINE`] (or fails) is closed, counted as closed by the server. The
    /// connection's own driver task answers the server's PINGs and sees its SETTINGS and
    /// GOAWAY meanwhile; no task is added per connection.
    pub(super) async fn ping_idle_h2(&self) {
        let due: Vec<(Rc<H2Conn>, h2::PingPong)> = self
            .h2
            .slots
            .borrow()
            .iter()
            .flat_map(|s| s.live.iter())
            .filter(|c| {
                !c.dead.get() && c.open.get() == 0 && c.idle_since.get().elapsed() >= H2_PING_AFTER
            })
            .filter_map(|c| {
                let p = c.ping.borrow_mut().take()?;
                Some((c.clone(), p))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        type Check = Pin<Box<dyn Future<Output = (Rc<H2Conn>, h2::PingPong, bool)>>>;
        let mut checks: Vec<Option<Check>> = due
            .into_iter()
            .map(|(c, mut p)| {
                let check: Check = Box::pin(async move {
                    let pong = futures_lite::future::or(
                        async { Some(p.ping(h2::Ping::opaque()).await) },
                        async {
                            glommio::timer::sleep(H2_PING_DEADLINE).await;
                            None
                        },
                    )
                    .await;
                    let ok = matches!(pong, Some(Ok(_)));
                    (c, p, ok)
                });
                Some(check)
            })
            .collect();
        let mut results = Vec::with_capacity(checks.len());
        poll_fn(|cx| {
            for slot in checks.iter_mut() {
                if let Some(f) = slot {
                    if let Poll::Ready(r) = f.as_mut().poll(cx) {
                        results.push(r);
                        *slot = None;
                    }
                }
            }
            if checks.iter().all(Option::is_none) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        for (c, p, ok) in results {
            if ok {
                *c.ping.borrow_mut() = Some(p);
            } else if c.open.get() == 0 || c.dead.get() {
                tracing::debug!("an idle HTTP/2 backend connection did not answer a PING");
                self.counters.borrow_mut().idle_closed_by_server += 1;
                c.dead.set(true);
                self.retire_h2(&c);
            } else {
                // Busy meanwhile: its streams will tell. Checked again when idle.
                *c.ping.borrow_mut() = Some(p);
            }
        }
    }

    /// The purge for HTTP/2: connections without streams for `--pool-purge-delay` close.
    pub(super) fn purge_h2(&self) {
        let delay = self.knobs.purge_delay;
        self.close_idle_h2(|c| c.idle_since.get().elapsed() < delay);
    }

    /// Closes the idle HTTP/2 connections of one slot (its server went down).
    pub(super) fn close_idle_h2_of(&self, slot: ServerId) {
        self.close_idle_h2(|c| c.slot != slot);
    }
}
