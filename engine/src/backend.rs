//! Backend connections on a shard: getting one for a request (idle pool, takeover from
//! another shard, or a new connect), giving it back, watching it while idle, purging.
//!
//! The pool's decisions come from `ringway-pool`; this module carries them out with
//! sockets. An idle connection sits in the pool together with a *watcher* task that polls
//! the socket in place: EOF, RST or any byte removes it at once. Taking the connection out
//! cancels the watcher (dropping its task handle). A connection closed by policy (purge,
//! limits, server down, shutdown) closes with RST so TIME_WAIT does not pile up.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::AsyncRead;
use glommio::net::TcpStream;
use ringway_pool::{FaultPoint, IdleKey, Next, PutResult, ServerId};

use crate::shard::{Shard, TakeoverOutcome};

/// How long a server stays marked down after a failed connect before it is tried again.
pub const DOWN_RETRY: Duration = Duration::from_secs(1);

/// A connection to a backend server, owned by exactly one request or the pool.
pub struct BackendConn {
    pub stream: TcpStream,
    pub server: ServerId,
    /// Requests carried so far (including the one in progress once it is sent).
    pub uses: u32,
}

/// A pooled connection and the task watching it.
pub struct IdleConn {
    pub conn: BackendConn,
    watcher: Option<glommio::Task<()>>,
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
    /// A connection about to enter the pool; its watcher starts once it has a key.
    pub fn new(conn: BackendConn) -> IdleConn {
        IdleConn {
            conn,
            watcher: None,
        }
    }
}

/// Takes the connection out of an idle entry, stopping its watcher.
fn unwrap_idle(mut ic: IdleConn) -> BackendConn {
    if let Some(w) = ic.watcher.take() {
        drop(w); // cancels the watcher; it holds no reference to the connection
    }
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
    fn checkout_local(&self, server: ServerId, first: bool) -> Option<BackendConn> {
        let got = self.pool.borrow_mut().checkout(server, first)?;
        self.publish_idle(server);
        let mut conn = unwrap_idle(got.conn);
        conn.uses = got.uses;
        Some(conn)
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
                Some(TakeoverOutcome::Granted(conn)) => return Some(conn),
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
                                Some(Some(TakeoverOutcome::Granted(conn))) => return Some(conn),
                                Some(Some(TakeoverOutcome::Next(n))) => next = n,
                                _ => return None,
                            }
                        }
                    }
                }
            }
        }
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
        let put = self.pool.borrow_mut().checkin(
            server,
            IdleConn {
                conn,
                watcher: None,
            },
            uses,
            Instant::now(),
        );
        self.pooled(put);
        self.publish_idle(server);
    }

    /// Starts the watcher of a freshly pooled connection, or closes a rejected one.
    fn pooled(self: &Rc<Self>, put: PutResult<IdleConn>) {
        match put {
            PutResult::Pooled(key) => {
                let w = glommio::spawn_local(watch_idle(self.clone(), key));
                if let Some(ic) = self.pool.borrow_mut().get_mut(key) {
                    ic.watcher = Some(w);
                }
            }
            PutResult::Rejected(ic, _why) => self.close_policy(unwrap_idle(ic)),
        }
    }

    /// Pools a connection that arrived from another shard after its request gave up (I5).
    pub fn adopt_idle(self: &Rc<Self>, conn: BackendConn) {
        let server = conn.server;
        let uses = conn.uses;
        self.backend_conns.set(self.backend_conns.get() + 1);
        let put = self.pool.borrow_mut().adopt_idle(
            server,
            IdleConn {
                conn,
                watcher: None,
            },
            uses,
            Instant::now(),
        );
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

/// Watches one pooled connection: any readiness (EOF, RST, stray bytes) removes it.
async fn watch_idle(shard: Rc<Shard>, key: IdleKey) {
    let mut scratch = [0u8; 64];
    let fired = poll_fn(|cx| {
        let mut pool = shard.pool.borrow_mut();
        match pool.get_mut(key) {
            None => Poll::Ready(false),
            Some(ic) => match Pin::new(&mut ic.conn.stream).poll_read(cx, &mut scratch) {
                Poll::Ready(_) => Poll::Ready(true),
                Poll::Pending => Poll::Pending,
            },
        }
    })
    .await;
    if !fired {
        return;
    }
    let removed = shard.pool.borrow_mut().remove(key);
    if let Some(mut ic) = removed {
        if let Some(w) = ic.watcher.take() {
            w.detach(); // this very task: let it finish rather than cancel itself
        }
        shard.metrics.borrow_mut().c.idle_closed_by_server += 1;
        let server = ic.conn.server;
        shard.close_policy(ic.conn);
        shard.publish_idle(server);
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
