//! Shared HTTP/2 backend connections of one shard (slots whose key says `Proto::Http2`:
//! `h2c://` and `h2://` servers).
//!
//! An HTTP/1.1 connection is lent whole to one request; an HTTP/2 connection is one
//! object ([`H2Conn`]: an `h2` `SendRequest` plus the task driving the `h2` `Connection`)
//! that many requests use at once, each through an [`H2Stream`] lease. A connection with
//! open streams is *busy* and sits in its slot's list here; a request takes a stream on
//! the oldest busy one with a free stream (fewer open than the server's
//! SETTINGS_MAX_CONCURRENT_STREAMS, fewer uses than `--max-reuse`). When its last stream
//! ends, a connection is *idle* and goes into the shard's `IdlePool` like an HTTP/1.1
//! one ([`Pooled::H2`](super::Pooled)), so purge, idle limits, server-down, the
//! published idle counts and takeover apply unchanged. A request that finds no busy
//! connection with a free stream takes an idle one from the pool, else takes one over
//! from another shard, else connects; at most one of those is in progress per slot: the
//! requests that find one in progress wait for it, as in hyper's pool.
//!
//! Taking over an idle HTTP/2 connection moves it whole: the taker reserves first (its
//! request task, the waiter slot, and the task that will drive the connection, parked
//! until it is given one); the owner takes the `h2` `Connection` out of its driver task
//! between two polls (the task then ends), detaches the transport under it ([`H2Io`]:
//! the fd duplicated first, so on failure nothing has moved) and sends the connection
//! state — HPACK tables, settings, stream ids, windows — with the `SendRequest` and the
//! fd in one `Grant` ([`H2Moved`]); the taker attaches the fd and hands the state to the
//! task it reserved. See docs/takeover.md.
//!
//! A connection that saw GOAWAY, a protocol or I/O error, or whose driver ended is
//! *dead*: it is never picked, pooled or granted again; its open streams finish on it.
//! Closing means dropping the last `SendRequest`, after which `h2` sends GOAWAY and ends
//! the driver. Idle health is a PING with a deadline, sent by the sweep
//! ([`Upstreams::ping_idle_h2`]) to pooled connections idle for [`H2_PING_AFTER`].
//!
//! It must never hold a connection in a list that cannot take a stream for a reason
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

use super::transport::{H2Io, IdleConn, Pooled};
use super::{AcquireError, Upstreams};
use crate::oneshot;

/// An `h2` client connection over a movable transport.
pub type ClientConn = h2client::Connection<H2Io>;

/// What the driver task polls, shared with the [`H2Conn`] so that the connection can be
/// taken out between two polls for a hand-over (the task then finds it gone and ends).
pub struct DriverCell {
    conn: RefCell<Option<ClientConn>>,
    waker: RefCell<Option<Waker>>,
    dead: Rc<Cell<bool>>,
}

impl DriverCell {
    fn new(conn: ClientConn) -> Rc<DriverCell> {
        Rc::new(DriverCell {
            conn: RefCell::new(Some(conn)),
            waker: RefCell::new(None),
            dead: Rc::new(Cell::new(false)),
        })
    }
}

/// The task body that drives one HTTP/2 connection: it answers the server's PINGs, reads
/// its SETTINGS and GOAWAY, and moves the streams' frames, until the connection ends or
/// is taken out for a hand-over.
pub(super) async fn drive(cell: Rc<DriverCell>) {
    poll_fn(|cx| {
        let mut slot = cell.conn.borrow_mut();
        let Some(conn) = slot.as_mut() else {
            // Taken for a hand-over: the state lives on elsewhere.
            return Poll::Ready(());
        };
        match Pin::new(conn).poll(cx) {
            Poll::Pending => {
                *cell.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
            Poll::Ready(res) => {
                if let Err(e) = res {
                    let normal =
                        matches!(e.get_io(), Some(io) if io.kind() == io::ErrorKind::NotConnected);
                    if !normal {
                        tracing::debug!(error = %e, "HTTP/2 backend connection ended");
                    }
                }
                *slot = None;
                cell.dead.set(true);
                Poll::Ready(())
            }
        }
    })
    .await
}

/// A driver task spawned before a takeover is asked for (part of the reservation): it
/// waits for the connection to drive, and ends if none comes.
pub(super) fn reserve_driver() -> oneshot::Sender<Rc<DriverCell>> {
    let (tx, rx) = oneshot::channel::<Rc<DriverCell>>();
    glommio::spawn_local(async move {
        if let Some(cell) = rx.await {
            drive(cell).await;
        }
    })
    .detach();
    tx
}

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
    /// What its driver task polls.
    driver: Rc<DriverCell>,
    /// The transport under it, for a hand-over.
    io: H2Io,
}

impl H2Conn {
    /// GOAWAY, an error, or the driver ended.
    pub fn is_dead(&self) -> bool {
        self.dead.get()
    }

    /// The pool slot it belongs to.
    pub fn slot(&self) -> ServerId {
        self.slot
    }

    fn from_parts(
        send: SendRequest<Bytes>,
        slot: ServerId,
        uses: u32,
        ping: Option<h2::PingPong>,
        driver: Rc<DriverCell>,
        io: H2Io,
    ) -> H2Conn {
        H2Conn {
            send,
            slot,
            open: Cell::new(0),
            uses: Cell::new(uses),
            dead: driver.dead.clone(),
            idle_since: Cell::new(glommio::clock::now()),
            counted: Cell::new(true),
            ping: RefCell::new(ping),
            driver,
            io,
        }
    }
}

/// An idle HTTP/2 connection on its way to another shard: the `h2` state (with its
/// transport detached inside), the handle to open streams with, and the PING handle.
pub struct H2Moved {
    conn: ClientConn,
    send: SendRequest<Bytes>,
    ping: Option<h2::PingPong>,
    io: H2Io,
}

/// Why an idle HTTP/2 connection was not detached.
pub(super) enum DetachH2 {
    /// It stays here, usable (the fd could not be duplicated, or a health check holds it).
    Kept(Rc<H2Conn>, io::Error),
    /// It is dead: close it.
    Dead(Rc<H2Conn>),
}

/// Detaches an idle HTTP/2 connection for a hand-over. Nothing is given up until the
/// duplicate fd exists; after that nothing can fail.
pub(super) fn detach_h2(conn: Rc<H2Conn>) -> Result<(Box<H2Moved>, u32), DetachH2> {
    if conn.dead.get() || conn.driver.conn.borrow().is_none() {
        return Err(DetachH2::Dead(conn));
    }
    let conn = match Rc::try_unwrap(conn) {
        Ok(c) => c,
        Err(rc) => {
            return Err(DetachH2::Kept(
                rc,
                io::Error::other("the connection is being health-checked"),
            ))
        }
    };
    if let Err(e) = conn.io.detach() {
        return Err(DetachH2::Kept(Rc::new(conn), e));
    }
    let Some(state) = conn.driver.conn.borrow_mut().take() else {
        // Checked above, and nothing ran in between.
        return Err(DetachH2::Dead(Rc::new(conn)));
    };
    // The old driver task finds its cell empty and ends.
    if let Some(w) = conn.driver.waker.borrow_mut().take() {
        w.wake();
    }
    let uses = conn.uses.get();
    let H2Conn { send, ping, io, .. } = conn;
    Ok((
        Box::new(H2Moved {
            conn: state,
            send,
            ping: ping.into_inner(),
            io,
        }),
        uses,
    ))
}

/// Binds a moved HTTP/2 connection to this shard. The caller starts its driver task with
/// the returned cell (a reserved one, or a new one). Cannot fail (invariant I2).
pub(super) fn attach_h2(
    m: Box<H2Moved>,
    slot: ServerId,
    uses: u32,
) -> (Rc<H2Conn>, Rc<DriverCell>) {
    let H2Moved {
        conn,
        send,
        ping,
        io,
    } = *m;
    io.attach();
    let cell = DriverCell::new(conn);
    let c = Rc::new(H2Conn::from_parts(send, slot, uses, ping, cell.clone(), io));
    (c, cell)
}

/// Starts a driver task for `cell`: on the reserved task when there is one, else anew.
pub(super) fn start_driver(
    cell: Rc<DriverCell>,
    reserved: Option<oneshot::Sender<Rc<DriverCell>>>,
) {
    let cell = match reserved {
        Some(tx) => match tx.send(cell) {
            Ok(()) => return,
            Err(cell) => cell,
        },
        None => cell,
    };
    glommio::spawn_local(drive(cell)).detach();
}

/// An HTTP/2 connection idle this long is checked with a PING at the next sweep.
pub const H2_PING_AFTER: Duration = Duration::from_secs(1);
/// How long the server has to answer that PING before the connection is closed.
pub const H2_PING_DEADLINE: Duration = Duration::from_secs(1);

/// What one slot has: its busy connections and the connect (or takeover) in progress.
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

/// The busy HTTP/2 connections of one shard, by slot.
pub(super) struct H2Pool {
    slots: RefCell<Vec<SlotConns>>,
}

impl H2Pool {
    pub(super) fn new(n_slots: usize) -> H2Pool {
        H2Pool {
            slots: RefCell::new((0..n_slots).map(|_| SlotConns::default()).collect()),
        }
    }

    /// Room for slots up to `n_slots` (a configuration reload added servers).
    pub(super) fn grow(&self, n_slots: usize) {
        let mut slots = self.slots.borrow_mut();
        while slots.len() < n_slots {
            slots.push(SlotConns::default());
        }
    }
}

/// A stream lent to one request on a shared HTTP/2 connection. Dropping it gives the
/// stream back (and pools or closes a connection whose last stream it was).
pub struct H2Stream {
    ups: Rc<Upstreams>,
    conn: Rc<H2Conn>,
    reused: bool,
    taken_over: bool,
}

impl H2Stream {
    /// A handle to open the stream with (a clone of the connection's `SendRequest`).
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.conn.send.clone()
    }

    /// The pool slot (server) of the stream's connection.
    pub fn slot(&self) -> ServerId {
        self.conn.slot
    }

    /// The connection had carried a stream before this one.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// The connection was taken over from another shard for this stream.
    pub fn taken_over(&self) -> bool {
        self.taken_over
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
            c.idle_since.set(glommio::clock::now());
            self.ups.h2_idle(c);
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
            .borrow()
            .keys
            .key(slot)
            .is_some_and(|k| k.proto == ringway_pool::Proto::Http2)
    }

    /// A stream for a request to an HTTP/2 slot: on a busy connection with a free
    /// stream, else on an idle one from this shard's pool, else on one taken over from
    /// another shard, else on a new one (waiting for a connect already in progress
    /// first). `fresh` forces a new connection (a retry after a reused one failed).
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
            if !fresh && shared && self.knobs.takeover {
                if let Some(Pooled::H2(conn)) = self.take_over(slot, false).await {
                    self.make_busy(&conn);
                    drop(guard);
                    let mut stream = self.lend(conn, true);
                    stream.taken_over = true;
                    return Ok(stream);
                }
                // A late grant of an earlier ask may have been adopted meanwhile.
                if let Some(conn) = self.pick_h2(slot) {
                    drop(guard);
                    return Ok(self.lend(conn, true));
                }
            }
            let conn = match self.connect_h2(slot).await {
                Ok(c) => c,
                Err(e) => {
                    guard.failed = Some(e.status());
                    return Err(e);
                }
            };
            if shared {
                self.make_busy(&conn);
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
            taken_over: false,
        }
    }

    /// Puts a connection on its slot's busy list (it is about to get a stream).
    fn make_busy(&self, conn: &Rc<H2Conn>) {
        if let Some(s) = self.h2.slots.borrow_mut().get_mut(conn.slot.index()) {
            if !s.live.iter().any(|c| Rc::ptr_eq(c, conn)) {
                s.live.push(conn.clone());
            }
        }
    }

    /// The last stream of a connection ended: it leaves the busy list and goes into the
    /// pool, or closes if it is dead, worn out, or private (`--reuse never`).
    fn h2_idle(&self, c: &Rc<H2Conn>) {
        let worn = self.knobs.max_reuse.is_some_and(|m| c.uses.get() >= m);
        let private = self.knobs.reuse == ReuseMode::Never;
        if c.dead.get() || worn || private || !c.counted.get() {
            self.retire_h2(c);
            return;
        }
        if let Some(s) = self.h2.slots.borrow_mut().get_mut(c.slot.index()) {
            s.live.retain(|x| !Rc::ptr_eq(x, c));
        }
        let uses = c.uses.get();
        let put = self.pool.borrow_mut().checkin(
            c.slot,
            IdleConn::h2(c.clone()),
            uses,
            glommio::clock::now(),
        );
        self.close_rejected(put);
        self.publish_idle(c.slot);
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

    /// The oldest busy connection of `slot` with a free stream, else an idle one from the
    /// pool (made busy); dead ones leave the list, or the pool, on the way.
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
        if picked.is_some() {
            return picked;
        }
        // Every idle HTTP/2 connection has carried a stream already, so the reuse modes'
        // rule for a session's first request (only proven connections) admits them all.
        loop {
            let got = self.pool.borrow_mut().checkout(slot, false)?;
            self.publish_idle(slot);
            match got.conn.conn {
                Pooled::H2(c) if !c.dead.get() => {
                    self.make_busy(&c);
                    return Some(c);
                }
                other => {
                    self.pool.borrow_mut().discard_checkout(slot);
                    self.counters.borrow_mut().idle_closed_by_server += 1;
                    self.close_pooled(other);
                }
            }
        }
    }

    /// Opens a TCP connection to `slot`'s server and runs the HTTP/2 handshake on it;
    /// spawns the task that drives the connection.
    async fn connect_h2(&self, slot: ServerId) -> Result<Rc<H2Conn>, AcquireError> {
        let conn = self.connect(slot, &[]).await?;
        let settings = ClientSettings {
            max_header_list_size: self.knobs.max_head,
            ..ClientSettings::default()
        };
        conn.transport.set_timeouts(None);
        let io = H2Io::new(conn.transport);
        let handshake = glommio::timer::timeout(self.knobs.connect_timeout, async {
            Ok(h2client::handshake(io.clone(), &settings).await)
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
        let mut ping = driver.ping_pong();
        let cell = DriverCell::new(driver);
        glommio::spawn_local(drive(cell.clone())).detach();
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
        Ok(Rc::new(H2Conn::from_parts(send, slot, 0, ping, cell, io)))
    }

    /// Takes a busy (or never pooled) connection out of its slot's list and out of the
    /// shard's count (once). Its streams still open finish on it; `h2` closes it when
    /// the last handle goes.
    pub(super) fn retire_h2(&self, conn: &Rc<H2Conn>) {
        if let Some(s) = self.h2.slots.borrow_mut().get_mut(conn.slot.index()) {
            s.live.retain(|c| !Rc::ptr_eq(c, conn));
        }
        if conn.counted.replace(false) {
            self.pool.borrow_mut().released(conn.slot);
            self.forget_conn();
        }
    }

    /// Closes an HTTP/2 connection the pool has already let go of (purged, refused,
    /// removed): out of the shard's count, with RST, once.
    pub(super) fn close_pooled_h2(&self, conn: Rc<H2Conn>) {
        conn.dead.set(true);
        if conn.counted.replace(false) {
            conn.io.arm_reset();
            self.forget_conn();
        }
    }

    /// Busy connections that died leave their lists (their streams finish on them).
    pub(super) fn retire_dead_h2(&self) {
        let dead: Vec<Rc<H2Conn>> = self
            .h2
            .slots
            .borrow()
            .iter()
            .flat_map(|s| s.live.iter())
            .filter(|c| c.dead.get())
            .cloned()
            .collect();
        for c in dead {
            self.retire_h2(&c);
        }
    }

    /// The idle health check for HTTP/2: every pooled connection idle for
    /// [`H2_PING_AFTER`] gets a PING, all at once, and one that does not answer within
    /// [`H2_PING_DEADLINE`] (or fails) is closed, counted as closed by the server. The
    /// connection's own driver task answers the server's PINGs and sees its SETTINGS and
    /// GOAWAY meanwhile; no task is added per connection.
    pub(super) async fn ping_idle_h2(&self) {
        let due: Vec<(Rc<H2Conn>, h2::PingPong)> = self
            .pool
            .borrow()
            .iter()
            .filter_map(|(_, _, ic)| match &ic.conn {
                Pooled::H2(c) => Some(c.clone()),
                Pooled::H1(_) => None,
            })
            .filter(|c| !c.dead.get() && c.idle_since.get().elapsed() >= H2_PING_AFTER)
            .filter_map(|c| {
                let p = c.ping.borrow_mut().take()?;
                Some((c, p))
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
            *c.ping.borrow_mut() = Some(p);
            if !ok && c.open.get() == 0 {
                // Still pooled: the next sweep takes dead ones out of the pool.
                tracing::debug!("an idle HTTP/2 backend connection did not answer a PING");
                c.dead.set(true);
            }
            // Busy meanwhile: its streams will tell. Checked again when idle.
        }
    }
}
