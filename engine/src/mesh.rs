//! Messages between shards, and the loop that receives them on each shard.
//!
//! A shard talks to another only through the bounded glommio channel mesh: takeover
//! (`Reserve`, `Grant`, `Deny`), metrics gathering for `/metrics`, and server up/down
//! news. A connection crosses shards only inside a `Grant`, as a detached [`OwnedFd`]
//! plus its request count: the owner holds no reference to it once the message is sent.
//! Sends never wait: a full channel is a miss.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::ConnectedReceiver;
use ringway_pool::{FaultPoint, GrantFate, Msg, ServerId};

use crate::backend::{BackendConn, IdleConn};
use crate::metrics::Snapshot;
use crate::shard::{Shard, TakeoverOutcome};

/// A backend connection between two shards: detached from the owner, not yet attached
/// to the taker.
#[derive(Debug)]
pub struct MovedConn {
    pub fd: OwnedFd,
}

/// Everything one shard can say to another.
pub enum ShardMsg {
    Takeover(Msg<MovedConn>),
    StatsRequest { from: usize, id: u64 },
    StatsReply { id: u64, snap: Box<Snapshot> },
    ServerDown { server: ServerId },
    ServerUp { server: ServerId },
}

/// Receives what peer `peer` sends to this shard, until the peer closes its end.
pub async fn receive_loop(shard: Rc<Shard>, peer: usize, rx: ConnectedReceiver<ShardMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            ShardMsg::Takeover(m) => on_takeover(&shard, m).await,
            ShardMsg::StatsRequest { from, id } => {
                let snap = Box::new(shard.snapshot());
                if let Some(s) = &shard.senders {
                    let _ = s.try_send_to(from, ShardMsg::StatsReply { id, snap });
                }
            }
            ShardMsg::StatsReply { id, snap } => on_stats_reply(&shard, id, *snap),
            ShardMsg::ServerDown { server } => shard.mark_down(server),
            ShardMsg::ServerUp { server } => shard.mark_up(server),
        }
    }
    tracing::debug!(shard = shard.id, peer, "mesh link closed");
}

async fn on_takeover(shard: &Rc<Shard>, m: Msg<MovedConn>) {
    match m {
        Msg::Reserve {
            from,
            server,
            ticket,
            allowed,
        } => {
            // Fault point: the owner answers late, so the taker's deadline may pass first.
            if shard.fault(FaultPoint::GrantDelay) {
                let delay = shard.config().takeover_timeout * 2;
                let s = shard.clone();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(delay).await;
                    answer_reserve(&s, from, server, ticket, allowed);
                })
                .detach();
            } else {
                answer_reserve(shard, from, server, ticket, allowed);
            }
        }
        Msg::Grant {
            ticket,
            server,
            conn,
            uses,
        } => {
            // Adopt: bind the fd to this shard. Nothing below can fail but I/O (I2).
            let stream = crate::fd::attach(conn.fd);
            let _ = stream.set_nodelay(true);
            let bc = BackendConn {
                stream,
                server,
                uses,
            };
            let fate = shard.taker.borrow_mut().on_grant(ticket);
            let waiter = shard.waiters.borrow_mut().remove(&ticket);
            match (fate, waiter) {
                (GrantFate::Deliver, Some(w)) => {
                    // Counted as adopted only once a request really takes it.
                    match w.send(TakeoverOutcome::Granted(bc)) {
                        Ok(()) => {
                            shard.pool.borrow_mut().adopted(server);
                            shard.backend_conns.set(shard.backend_conns.get() + 1);
                        }
                        // The request vanished in between: keep the connection idle (I5).
                        Err(TakeoverOutcome::Granted(bc)) => shard.adopt_idle(bc),
                        Err(TakeoverOutcome::Next(_)) => {}
                    }
                }
                _ => shard.adopt_idle(bc),
            }
        }
        Msg::Deny { ticket } => {
            let next = shard.taker.borrow_mut().on_deny(ticket, Instant::now());
            if let Some(w) = shard.waiters.borrow_mut().remove(&ticket) {
                let _ = w.send(TakeoverOutcome::Next(next));
            }
        }
    }
}

/// Owner side: hand over an idle connection (detached first) or deny.
fn answer_reserve(
    shard: &Rc<Shard>,
    from: usize,
    server: ServerId,
    ticket: ringway_pool::Ticket,
    allowed: ringway_pool::Allowed,
) {
    let reply = shard.owner.borrow_mut().handle_reserve(
        &mut shard.pool.borrow_mut(),
        server,
        ticket,
        allowed,
    );
    let Some(senders) = &shard.senders else {
        return;
    };
    match reply {
        Msg::Grant {
            ticket,
            server,
            conn,
            uses,
        } => {
            shard.publish_idle(server);
            // Hand over: detach the fd (no operation on this shard's ring refers to it after).
            let bc = shard.unwrap_idle(conn);
            let fd = match crate::fd::detach(bc.stream) {
                Ok(fd) => fd,
                Err(e) => {
                    // dup failed (fd limit): the stream is gone; account for it and deny.
                    tracing::warn!(error = %e, "cannot detach an idle connection for takeover");
                    shard.forget_conn();
                    let _ = senders.try_send_to(from, ShardMsg::Takeover(Msg::Deny { ticket }));
                    return;
                }
            };
            let msg = ShardMsg::Takeover(Msg::Grant {
                ticket,
                server,
                conn: MovedConn { fd },
                uses,
            });
            let full = shard.fault(FaultPoint::ChannelFull);
            let res = if full {
                Err(Some(msg))
            } else {
                senders.try_send_to(from, msg).map_err(|e| match e {
                    glommio::GlommioError::Closed(glommio::ResourceType::Channel(m))
                    | glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m)) => {
                        Some(m)
                    }
                    _ => None,
                })
            };
            match res {
                Ok(()) => shard.forget_conn(),
                Err(Some(ShardMsg::Takeover(Msg::Grant {
                    ticket,
                    server,
                    conn,
                    uses,
                }))) => {
                    // Could not send: the connection comes back to this shard's pool.
                    let stream = crate::fd::attach(conn.fd);
                    let ic = IdleConn::new(BackendConn {
                        stream,
                        server,
                        uses,
                    });
                    shard.regain_granted(Msg::Grant {
                        ticket,
                        server,
                        conn: ic,
                        uses,
                    });
                    shard.publish_idle(server);
                }
                Err(_) => shard.forget_conn(),
            }
        }
        Msg::Deny { ticket } => {
            let _ = senders.try_send_to(from, ShardMsg::Takeover(Msg::Deny { ticket }));
        }
        Msg::Reserve { .. } => {}
    }
}

/// Tells every other shard that a server went down (or came back).
pub fn broadcast_server_state(shard: &Shard, server: ServerId, down: bool) {
    let Some(s) = &shard.senders else { return };
    for peer in 0..shard.shared.n_shards {
        if peer != shard.id {
            let msg = if down {
                ShardMsg::ServerDown { server }
            } else {
                ShardMsg::ServerUp { server }
            };
            let _ = s.try_send_to(peer, msg);
        }
    }
}

fn on_stats_reply(shard: &Shard, id: u64, snap: Snapshot) {
    let mut waiters = shard.stats_waiters.borrow_mut();
    let done = match waiters.get_mut(&id) {
        Some((expected, got, _)) => {
            got.push(snap);
            got.len() >= *expected
        }
        None => false,
    };
    if done {
        if let Some((_, got, Some(tx))) = waiters.remove(&id) {
            let _ = tx.send(got);
        }
    }
}

/// Gathers a snapshot from every shard through the mesh (the admin shard's own included).
/// Shards that do not answer within `timeout` are left out.
pub async fn gather(shard: &Rc<Shard>, timeout: Duration) -> Vec<Snapshot> {
    let mut own = vec![shard.snapshot()];
    let Some(senders) = &shard.senders else {
        return own;
    };
    let id = shard.stats_seq.get() + 1;
    shard.stats_seq.set(id);
    let (tx, rx) = crate::oneshot::channel();
    let mut asked = 0;
    for peer in 0..shard.shared.n_shards {
        if peer != shard.id
            && senders
                .try_send_to(peer, ShardMsg::StatsRequest { from: shard.id, id })
                .is_ok()
        {
            asked += 1;
        }
    }
    if asked == 0 {
        return own;
    }
    shard
        .stats_waiters
        .borrow_mut()
        .insert(id, (asked, Vec::new(), Some(tx)));
    let got = futures_lite::future::or(async { rx.await.unwrap_or_default() }, async {
        glommio::timer::sleep(timeout).await;
        Vec::new()
    })
    .await;
    let got = if got.is_empty() {
        // Timed out: take whatever arrived.
        shard
            .stats_waiters
            .borrow_mut()
            .remove(&id)
            .map(|(_, g, _)| g)
            .unwrap_or_default()
    } else {
        got
    };
    own.extend(got);
    own
}
