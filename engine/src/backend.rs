//! Backend connections on a shard: getting one for a request (idle pool, takeover from
//! another shard, or a new connect), giving it back, checking idle ones, purging.
//!
//! The pool's decisions come from `ringway-pool`; this module carries them out with
//! sockets. An idle connection is checked with a non-blocking `MSG_PEEK` when it is taken
//! for a request and by a sweep every [`IDLE_SWEEP`]: EOF, RST or any byte the server
//! sent unasked removes it. (A watcher task per idle period cost a spawn, a cancel and a
//! poll per request: a third of the throughput, and glommio 0.9 leaked memory on it.)
//! A connection closed by policy (purge, limits, server down, shutdown) closes with RST
//! so TIME_WAIT does not pile up.

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use ringway_pool::{FaultPoint, IdleKey, Next, PutResult, ServerId};

use crate::shard::{Shard, TakeoverOutcome};

/// How often idle connections are checked for a close or stray bytes from the server.
pub const IDLE_SWEEP: Duration = Duration::from_secs(1);

/// Idle connections pooled at least this long are probed (`MSG_PEEK`) before reuse.
pub const PROBE_AFTER: Duration = Duration::from_millis(50);

/// How long a server stays marked down after a failed connect before it is tried again.
pub const DOWN_RETRY: Duration = Duration::from_secs(1);

/// A connection to a backend server, owned by exactly one request or the pool.
pub struct BackendConn {
    pub stream: TcpStream,
    pub server: ServerId,
    /// Requests carried so far (including the one in progress once it is sent).
    pub uses: u32,
}

impl BackendConn {
    /// The connection is about to carry one more request: count it, and bound each of its
    /// reads and writes by `--timeout-backend` (idle pooled connections have no timeout).
    pub fn begin_request(&mut self, timeout: Duration) {
        self.uses += 1;
        let _ = self.stream.set_read_timeout(Some(timeout));
        let _ = self.stream.set_write_timeout(Some(timeout));
    }
}

/// A pooled connection. (A newtype so the pool's entries say what they hold.)
pub struct IdleConn {
    pub conn: BackendConn,
    /// When it entered the pool.
    pub since: Instant,
}

/// Why no backend connection could be had.
#[derive(Debug)]
pub enum AcquireError {
    /// The server refused or reset the connect (502).
    Refused(io::Error),
    /// The connect did not finish within --timeout-connect (504).
    Timeout,
    /// An injected fault or a capacity limit (503).
    Unavailable(&'static str),
}

impl AcquireError {
    pub fn status(&self) -> u16 {
        match self {
            AcquireError::Refused(_) => 502,
            AcquireError::Timeout => 504,
            AcquireError::Unavailable(_) => 503,
        }
    }
}

impl IdleConn {
    /// A connection about to enter the pool.
    pub fn new(conn: BackendConn) -> IdleConn {
        IdleConn {
            conn,
            since: Instant::now(),
        }
    }
}

/// Takes the connection out of an idle entry.
fn unwrap_idle(ic: IdleConn) -> BackendConn {
    ic.conn
}

impl Shard {
    /// Whether a server may be chosen now: up, or down long enough to be tried again.
    pub fn server_usable(&self, server: ServerId) -> bool {
        match self.down_since.get(server.index()).and_then(|c| c.get()) {
            None => true,
            Some(t) => t.elapsed() >= DOWN_RETRY,
        }
    }

    /// Chooses a server of `backend` by round-robin, skipping servers marked down.
    pub fn choose_server(&self, backend: usize) -> ServerId {
        let range = self.shared.backend_servers[backend].clone();
        let n = (range.end - range.start) as usize;
        let idx =
            self.rr[backend].pick(n, |i| self.server_usable(ServerId(range.start + i as u32)));
        ServerId(range.start + idx as u32)
    }

    /// A connection for a request to `server`: from this shard's pool, else taken over
    /// from another shard, else a new connect. `first` is the client session's first
    /// request; `fresh` forces a new connect (a retry after a reused one failed).
    pub async fn acquire(
        self: &Rc<Self>,
        server: ServerId,
        first: bool,
        fresh: bool,
    ) -> Result<(BackendConn, bool), AcquireError> {
        if !fresh {
            if let Some(conn) = self.checkout_local(server, first) {
                return Ok((conn, true));
            }
            if self.config().takeover && self.shared.n_shards > 1 {
                if let Some(conn) = self.take_over(server, first).await {
                    return Ok((conn, true));
                }
                // A late grant of an earlier ask may have been adopted meanwhile.
                if let Some(conn) = self.checkout_local(server, first) {
                    return Ok((conn, true));
                }
            }
        }
        self.connect(server).await.map(|c| (c, false))
    }

    /// The most recently used idle connection this request may use, from this shard.
    /// Connections the server closed (or wrote on) while idle are discarded on the way.
    fn checkout_local(&self, server: ServerId, first: bool) -> Option<BackendConn> {
        loop {
            let got = self.pool.borrow_mut().checkout(server, first)?;
            // Just pooled: the sweep and the retry rule cover the rare close in between;
            // skip the syscall on the hot path.
            let fresh = got.conn.since.elapsed() < PROBE_AFTER;
            let conn = unwrap_idle(got.conn);
            if fresh || crate::fd::idle_is_healthy(&conn.stream) {
                self.publish_idle(server);
                let mut conn = conn;
                conn.uses = got.uses;
                return Some(conn);
            }
            self.pool.borrow_mut().discard_checkout(server);
            self.metrics.borrow_mut().c.idle_closed_by_server += 1;
            self.close_policy(conn);
            self.publish_idle(server);
        }
    }

    /// The taker side of the takeover protocol. Returns a connection adopted from another
    /// shard, or `None` to connect anew.
    async fn take_over(self: &Rc<Self>, server: ServerId, first: bool) -> Option<BackendConn> {
        let allowed = self.config().reuse.allowed(first);
        let mut next = {
            let mut row = self.published_scratch.borrow_mut();
            self.shared.published_row(server, &mut row);
            self.taker
                .borrow_mut()
                .begin(server, allowed, &row, Instant::now())
        };
        loop {
            let (shard, ticket) = match next {
                Next::Ask { shard, ticket } => (shard, ticket),
                Next::ConnectNew(_) | Next::WaiterGone => return None,
            };
            // 1. Reserve: everything the adoption needs exists before anything is sent:
            //    this request's task (parked below) with its buffers, and its waiter slot.
            let over_capacity = self.backend_conns.get() >= self.config().max_conns_per_shard;
            if over_capacity || self.fault(FaultPoint::Reserve) {
                next = self.taker.borrow_mut().on_reserve_failed(ticket);
                continue;
            }
            let (tx, rx) = crate::oneshot::channel();
            self.waiters.borrow_mut().insert(ticket, tx);
            // 2. Ask. A full channel is a miss, never a wait.
            let msg = crate::mesh::ShardMsg::Takeover(ringway_pool::Msg::Reserve {
                from: self.id,
                server,
                ticket,
                allowed,
            });
            let sent = !self.fault(FaultPoint::ChannelFull)
                && self
                    .senders
                    .as_ref()
                    .is_some_and(|s| s.try_send_to(shard, msg).is_ok());
            if !sent {
                self.waiters.borrow_mut().remove(&ticket);
                next = self
                    .taker
                    .borrow_mut()
                    .on_send_failed(ticket, Instant::now());
                continue;
            }
            // 3. Wait, bounded by the ticket's deadline (I3).
            let deadline = self
                .taker
                .borrow()
                .deadline(ticket)
                .unwrap_or_else(Instant::now);
            let mut rx = rx;
            let waited = futures_lite::future::or(async { (&mut rx).await }, async {
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                None
            })
            .await;
            match waited {
                Some(TakeoverOutcome::Granted(conn)) => return self.healthy_adopted(conn),
                Some(TakeoverOutcome::Next(n)) => next = n,
                None => {
                    // Deadline: resolve every expired ticket; hand the others their next step.
                    let expired = self.taker.borrow_mut().poll_timeouts(Instant::now());
                    let mut mine = None;
                    for (t, n) in expired {
                        let waiter = self.waiters.borrow_mut().remove(&t);
                        if t == ticket {
                            mine = Some(n);
                        } else if let Some(w) = waiter {
                            let _ = w.send(TakeoverOutcome::Next(n));
                        }
                    }
                    match mine {
                        Some(n) => next = n,
                        None => {
                            // Resolved meanwhile (a grant or deny raced the timer): its
                            // outcome is already in our slot.
                            self.waiters.borrow_mut().remove(&ticket);
                            match futures_lite::future::poll_once(&mut rx).await {
                                Some(Some(TakeoverOutcome::Granted(conn))) => {
                                    return self.healthy_adopted(conn)
                                }
                                Some(Some(TakeoverOutcome::Next(n))) => next = n,
                                _ => return None,
                            }
                        }
                    }
                }
            }
        }
    }

    /// An adopted connection the server closed while it was idle on its owner is not used.
    /// The `adopt` fault point makes a healthy one look dead: after the fd left its owner,
    /// the connection's own I/O is the only thing that may fail (I2), and this is that path.
    fn healthy_adopted(&self, conn: BackendConn) -> Option<BackendConn> {
        if !self.fault(FaultPoint::Adopt) && crate::fd::idle_is_healthy(&conn.stream) {
            return Some(conn);
        }
        let server = conn.server;
        self.pool.borrow_mut().discard_checkout(server);
        self.metrics.borrow_mut().c.idle_closed_by_server += 1;
        self.close_policy(conn);
        None
    }

    /// Opens a new connection to `server`, marking it down on failure.
    pub async fn connect(self: &Rc<Self>, server: ServerId) -> Result<BackendConn, AcquireError> {
        if self.fault(FaultPoint::Connect) {
            self.metrics.borrow_mut().c.backend_connect_errors += 1;
            return Err(AcquireError::Unavailable("injected connect fault"));
        }
        if self.backend_conns.get() >= self.config().max_conns_per_shard {
            return Err(AcquireError::Unavailable("shard connection limit"));
        }
        let addr = self.shared.servers[server.index()].addr;
        let res = TcpStream::connect_timeout(addr, self.config().timeouts.connect).await;
        match res {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                self.pool.borrow_mut().connected(server);
                self.backend_conns.set(self.backend_conns.get() + 1);
                if let Some(c) = self.down_since.get(server.index()) {
                    if c.take().is_some() {
                        self.pool.borrow_mut().set_server_down(server, false);
                        crate::mesh::broadcast_server_state(self, server, false);
                    }
                }
                Ok(BackendConn {
                    stream,
                    server,
                    uses: 0,
                })
            }
            Err(e) => {
                let e: io::Error = e.into();
                if is_local_exhaustion(&e) {
                    // Our own limit, not the server's fault: 503, and the server stays up.
                    self.metrics.borrow_mut().c.local_exhaustion += 1;
                    crate::proxy::warn_rate_limited(self, "cannot open a backend connection", &e);
                    return Err(AcquireError::Unavailable(
                        "out of file descriptors or memory",
                    ));
                }
                self.metrics.borrow_mut().c.backend_connect_errors += 1;
                let timed_out = e.kind() == io::ErrorKind::TimedOut;
                tracing::warn!(server = %addr, error = %e, "backend connect failed; marking the server down");
                self.mark_down(server);
                crate::mesh::broadcast_server_state(self, server, true);
                if timed_out {
                    Err(AcquireError::Timeout)
                } else {
                    Err(AcquireError::Refused(e))
                }
            }
        }
    }

    /// Marks a server down on this shard and closes its idle connections.
    pub fn mark_down(&self, server: ServerId) {
        if let Some(c) = self.down_since.get(server.index()) {
            if c.get().is_none() {
                self.metrics.borrow_mut().c.server_down_events += 1;
            }
            c.set(Some(Instant::now()));
        }
        let closing = self.pool.borrow_mut().set_server_down(server, true);
        for ic in closing {
            self.close_policy(unwrap_idle(ic));
        }
        self.publish_idle(server);
    }

    /// Marks a server up again on this shard (another shard reached it).
    pub fn mark_up(&self, server: ServerId) {
        if let Some(c) = self.down_since.get(server.index()) {
            c.set(None);
        }
        self.pool.borrow_mut().set_server_down(server, false);
    }

    /// A request is done with its connection. `reusable` is false when the framing or the
    /// state of the connection can no longer be trusted.
    pub fn release(self: &Rc<Self>, conn: BackendConn, reusable: bool) {
        let server = conn.server;
        if !reusable {
            self.pool.borrow_mut().released(server);
            self.close_conn(conn);
            return;
        }
        if self.fault(FaultPoint::Checkin) {
            self.pool.borrow_mut().released(server);
            self.close_policy(conn);
            return;
        }
        let _ = conn.stream.set_read_timeout(None);
        let _ = conn.stream.set_write_timeout(None);
        let uses = conn.uses;
        let put = self
            .pool
            .borrow_mut()
            .checkin(server, IdleConn::new(conn), uses, Instant::now());
        self.pooled(put);
        self.publish_idle(server);
    }

    /// Closes a connection the pool refused.
    fn pooled(self: &Rc<Self>, put: PutResult<IdleConn>) {
        if let PutResult::Rejected(ic, _why) = put {
            self.close_policy(unwrap_idle(ic));
        }
    }

    /// Pools a connection that arrived from another shard after its request gave up (I5).
    pub fn adopt_idle(self: &Rc<Self>, conn: BackendConn) {
        let server = conn.server;
        let uses = conn.uses;
        self.backend_conns.set(self.backend_conns.get() + 1);
        let put =
            self.pool
                .borrow_mut()
                .adopt_idle(server, IdleConn::new(conn), uses, Instant::now());
        self.pooled(put);
        self.publish_idle(server);
    }

    /// Returns a granted connection that could not be sent back into this shard's pool.
    pub fn regain_granted(self: &Rc<Self>, msg: ringway_pool::Msg<IdleConn>) {
        let back =
            self.owner
                .borrow_mut()
                .reply_failed(&mut self.pool.borrow_mut(), msg, Instant::now());
        if let Some(put) = back {
            self.pooled(put);
        }
    }

    /// The connection leaves this shard (handed to another one).
    pub fn forget_conn(&self) {
        self.backend_conns
            .set(self.backend_conns.get().saturating_sub(1));
    }

    /// Closes a connection with FIN (the normal end of its life).
    pub fn close_conn(&self, conn: BackendConn) {
        self.forget_conn();
        drop(conn);
    }

    /// Closes a connection by policy, with RST (`SO_LINGER 0`).
    pub fn close_policy(&self, conn: BackendConn) {
        crate::fd::set_linger_zero(&conn.stream);
        self.close_conn(conn);
    }

    pub fn unwrap_idle(&self, ic: IdleConn) -> BackendConn {
        unwrap_idle(ic)
    }
}

/// Errors that say this process ran out of something (fds, buffers, memory), not that
/// the server failed.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Every [`IDLE_SWEEP`], removes idle connections the server closed or wrote on.
pub async fn sweep_loop(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(IDLE_SWEEP).await;
        if shard.draining.get() {
            return;
        }
        let dead: Vec<(IdleKey, ServerId)> = shard
            .pool
            .borrow()
            .iter()
            .filter(|(_, _, ic)| !crate::fd::idle_is_healthy(&ic.conn.stream))
            .map(|(k, s, _)| (k, s))
            .collect();
        for (key, server) in dead {
            let removed = shard.pool.borrow_mut().remove(key);
            if let Some(ic) = removed {
                shard.metrics.borrow_mut().c.idle_closed_by_server += 1;
                shard.close_policy(ic.conn);
                shard.publish_idle(server);
            }
        }
    }
}

/// Every `--pool-purge-delay`, closes the idle connections the pool says are in excess.
pub async fn purge_loop(shard: Rc<Shard>) {
    let delay = shard.config().pool_purge_delay;
    loop {
        glommio::timer::sleep(delay).await;
        if shard.draining.get() {
            return;
        }
        let purged = shard.pool.borrow_mut().purge();
        let mut servers = Vec::new();
        for (server, ic) in purged {
            shard.close_policy(unwrap_idle(ic));
            servers.push(server);
        }
        servers.dedup();
        for s in servers {
            shard.publish_idle(s);
        }
    }
}

/// Shutdown: closes every idle connection of this shard.
pub fn close_all_idle(shard: &Shard) {
    let all = shard.pool.borrow_mut().drain();
    for (server, ic) in all {
        shard.close_policy(unwrap_idle(ic));
        shard.publish_idle(server);
    }
}
