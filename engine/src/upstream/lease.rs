//! [`Lease`]: a backend connection lent to one request (or to one client session, for
//! `--reuse never`). Like hyper's `Pooled<T>`, it gives the connection back when it is
//! dropped: to the pool if the exchange marked it reusable, else closed and accounted.
//! No path — success, error, client gone, task cancelled — can leak it or forget the
//! pool's counters.

use std::rc::Rc;
use std::time::Duration;

use ringway_pool::ServerId;

use super::{BackendConn, Transport, Upstreams};
use crate::fd::IdlePeek;

/// How a lease's connection was had (the access log's `reused`/`taken-over`/`new`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// From this shard's idle pool.
    Pooled,
    /// Taken over from another shard's idle pool.
    TakenOver,
    /// Connected for this request, in this long.
    Connected(Duration),
}

impl Acquired {
    pub fn name(self) -> &'static str {
        match self {
            Acquired::Pooled => "reused",
            Acquired::TakenOver => "taken-over",
            Acquired::Connected(_) => "new",
        }
    }
}

pub struct Lease {
    ups: Rc<Upstreams>,
    /// Always `Some` until the lease is dropped.
    conn: Option<Box<BackendConn>>,
    reused: bool,
    reusable: bool,
    acquired: Acquired,
}

impl Lease {
    pub(super) fn new(ups: Rc<Upstreams>, conn: Box<BackendConn>, reused: bool) -> Lease {
        Lease {
            ups,
            conn: Some(conn),
            reused,
            reusable: false,
            acquired: if reused {
                Acquired::Pooled
            } else {
                Acquired::Connected(Duration::ZERO)
            },
        }
    }

    /// A connection its client's session kept between requests is used again: a failure
    /// before any response byte may then mean the server closed it meanwhile.
    pub fn kept(mut self) -> Lease {
        self.reused = self.conn.as_ref().is_some_and(|c| c.uses > 0);
        self
    }

    /// The connection came from another shard.
    pub(super) fn taken_over(mut self) -> Lease {
        self.acquired = Acquired::TakenOver;
        self
    }

    /// The connection was opened for this lease, in `took`.
    pub(super) fn connected_in(mut self, took: Duration) -> Lease {
        self.acquired = Acquired::Connected(took);
        self
    }

    /// How the connection was had. A connection opened for an earlier request of the
    /// same client (kept private with `--reuse never`) counts as pooled.
    pub fn acquired(&self) -> Acquired {
        match self.acquired {
            Acquired::Connected(_) if self.conn().uses > 0 => Acquired::Pooled,
            a => a,
        }
    }

    fn conn(&self) -> &BackendConn {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until it is dropped")
    }

    /// The connection's transport, to write the request and read the response.
    pub fn transport(&mut self) -> &mut Transport {
        &mut self
            .conn
            .as_mut()
            .expect("a lease holds its connection until it is dropped")
            .transport
    }

    /// The pool slot (server and protocol) of the connection.
    pub fn slot(&self) -> ServerId {
        self.conn().slot
    }

    /// Whether the connection carried a request before this lease (a failure before any
    /// response byte may then mean the server closed it meanwhile: retryable).
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// The connection is about to carry one more request: count it, and bound each of
    /// its reads and writes by `timeout` (idle pooled connections have no timeout).
    pub fn begin_request(&mut self, timeout: Duration, carries_body: bool) {
        if let Some(c) = self.conn.as_mut() {
            c.uses += 1;
            c.transport.set_timeouts(Some(timeout));
            c.carried_body |= carries_body;
        }
        self.reusable = false;
    }

    /// Whether the connection goes back to the pool when the lease is dropped. Only an
    /// exchange that ended with the framing intact on both sides says yes.
    pub fn set_reusable(&mut self, reusable: bool) {
        self.reusable = reusable;
    }

    /// Whether the lease would go back to the pool now.
    pub fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// Whether the connection began with a PROXY header naming one client (`send-proxy`):
    /// it is never pooled, only kept by that client's session.
    pub fn is_private(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.private)
    }

    /// Whether the connection has ever carried a request body (then it is never pooled).
    pub fn carried_body(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.carried_body)
    }

    /// Whether a kept connection is still quiet between requests: nothing from the
    /// server since its last response. Unsolicited bytes are counted as a desync.
    pub fn still_quiet(&mut self) -> bool {
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        match c.transport.idle_peek() {
            IdlePeek::Quiet => true,
            IdlePeek::Closed => false,
            IdlePeek::Unsolicited => {
                self.ups.count_desync();
                false
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.ups.give_back(conn, self.reusable);
        }
    }
}
