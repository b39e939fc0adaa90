//! The invariants I1-I6 of DESIGN.md, and the HTTP/2 rules (`h2_conns`: busy and avail
//! lists, stream counts, GOAWAY, acquisitions) and "no request lost", checked against the
//! simulated world after every step.
//!
//! This module only reads the world; it never changes it. I2 and I5 are also enforced
//! where they can be broken (the grant path in `network.rs`) and I6 where connections are
//! closed (`World::close`); here they are checked as totals that must balance. The
//! takeover's tables are read from each shard's `Driver`, the code the engine runs.

use std::collections::BTreeMap;

use ringway_pool::{ConnClass, ServerId, ServerStats};

use crate::world::{Close, Flight, RejectReasonKey as R, ReqState, Res, SimConn, World};
use ringway_pool::Msg;

pub fn check(w: &World, at_rest: bool) -> Res {
    i1_one_owner(w)?;
    h2_conns(w)?;
    i3_bounded_waits(w)?;
    i4_counters(w)?;
    i5_grants_balance(w)?;
    i6_policy_closes(w)?;
    requests_accounted(w)?;
    if at_rest {
        rest(w)?;
    }
    Ok(())
}

/// I1: every open connection is in exactly one place: a pool, a request, a message.
fn i1_one_owner(w: &World) -> Res {
    let mut seen: BTreeMap<u64, &'static str> = BTreeMap::new();
    let mut place = |id: u64, server: ServerId, what: &'static str| -> Res {
        if let Some(prev) = seen.insert(id, what) {
            return Err(format!("I1: connection {id} is both {prev} and {what}"));
        }
        match w.open.get(&id) {
            None => Err(format!("I1: connection {id} ({what}) is closed or unknown")),
            Some(s) if *s != server => Err(format!("I1: connection {id} moved server")),
            Some(_) => Ok(()),
        }
    };
    for sh in &w.shards {
        for (_, server, conn) in sh.pool.iter() {
            place(conn.id, server, "idle")?;
            resting(w, conn, server, "idle in a pool")?;
        }
        for b in sh.busy.values() {
            place(b.conn.id, b.server, "busy")?;
        }
    }
    for r in w.reqs.values() {
        if let ReqState::Active { conn, .. } = &r.state {
            place(conn.id, r.meta.server, "in use")?;
            if w.is_h2(r.meta.server) || conn.h2.is_some() {
                return Err(format!(
                    "H2-place: connection {} lent whole to a request, as HTTP/1.1",
                    conn.id
                ));
            }
        }
    }
    for Flight { msg, .. } in &w.flights {
        if let Msg::Grant { conn, server, .. } = msg {
            place(conn.id, *server, "in a grant")?;
            resting(w, conn, *server, "in a grant")?;
        }
    }
    if seen.len() != w.open.len() {
        let lost: Vec<_> = w.open.keys().filter(|id| !seen.contains_key(id)).collect();
        return Err(format!("I1: open connections owned by nobody: {lost:?}"));
    }
    Ok(())
}

/// A connection idle in a pool or inside a grant carries nothing: no open stream (the
/// server's view), no GOAWAY the client has read, and `h2` state exactly when its key
/// says HTTP/2.
fn resting(w: &World, conn: &SimConn, server: ServerId, where_: &str) -> Res {
    let srv = w
        .srv
        .get(&conn.id)
        .ok_or_else(|| format!("I1: connection {} has no server side", conn.id))?;
    if !srv.open.is_empty() {
        return Err(format!(
            "H2-idle: connection {} is {where_} with {} open stream(s) {:?}",
            conn.id,
            srv.open.len(),
            srv.open
        ));
    }
    match &conn.h2 {
        Some(st) if st.dead.is_some() => Err(format!(
            "H2-dead: connection {} is {where_} after it read GOAWAY",
            conn.id
        )),
        Some(_) if !w.is_h2(server) => Err(format!(
            "H2-place: HTTP/1.1 connection {} has h2 state",
            conn.id
        )),
        None if w.is_h2(server) => Err(format!(
            "H2-place: HTTP/2 connection {} has no h2 state",
            conn.id
        )),
        _ => Ok(()),
    }
}

/// The HTTP/2 rules: every busy connection has at least one open stream and exactly the
/// streams the server sees; its streams' requests stream on it; it never has more open
/// streams than its max allows; it is on `avail` exactly when it can take a stream; the
/// per-shard stream gauges sum to the streams open; every connect in progress has its
/// requests, at most one shared connect per server and shard.
fn h2_conns(w: &World) -> Res {
    for (rid, r) in &w.reqs {
        if let ReqState::Stream { seq, conn, sid } = r.state {
            let on = w.shards[r.meta.shard].busy.get(&seq);
            if !on.is_some_and(|b| b.conn.id == conn && b.streams.get(&sid) == Some(rid)) {
                let state = if w.open.contains_key(&conn) {
                    "open but not busy"
                } else {
                    "closed"
                };
                return Err(format!(
                    "H2-idle: request {rid} has stream {sid} open on connection {conn}, which is {state}"
                ));
            }
        }
    }
    let mut streams_total = 0u64;
    for (s, sh) in w.shards.iter().enumerate() {
        let mut on_shard = 0u64;
        for (seq, b) in &sh.busy {
            let id = b.conn.id;
            let st = b
                .conn
                .h2
                .as_ref()
                .ok_or_else(|| format!("H2-place: busy connection {id} has no h2 state"))?;
            if !w.is_h2(b.server) {
                return Err(format!("H2-place: HTTP/1.1 connection {id} in a busy list"));
            }
            if b.streams.is_empty() {
                return Err(format!(
                    "H2-idle: connection {id} is busy with no stream open"
                ));
            }
            let srv = w
                .srv
                .get(&id)
                .ok_or_else(|| format!("I1: connection {id} has no server side"))?;
            if srv.open != b.streams {
                return Err(format!(
                    "H2-streams: connection {id}: the client has {:?} open, the server {:?}",
                    b.streams, srv.open
                ));
            }
            if !srv.wire.is_empty() {
                return Err(format!("H2: busy connection {id} left frames unread"));
            }
            let open = b.streams.len() as u32;
            if open > b.ceiling || b.ceiling < st.max {
                return Err(format!(
                    "H2-max: connection {id} has {open} streams open, max {} (ceiling {})",
                    st.max, b.ceiling
                ));
            }
            if open > st.max && b.ceiling != open {
                return Err(format!(
                    "H2-max: connection {id} is over its max {} with {open} open, ceiling {}",
                    st.max, b.ceiling
                ));
            }
            let eligible = crate::h2::avail_eligible(w, b);
            if eligible != sh.avail.contains(&(b.server, *seq)) {
                let why = if st.dead.is_some() {
                    "H2-dead"
                } else if open >= st.max {
                    "H2-max"
                } else {
                    "H2-avail"
                };
                return Err(format!(
                    "{why}: connection {id} (open {open}, max {}, uses {}, dead {:?}) is {}on avail",
                    st.max,
                    b.uses,
                    st.dead,
                    if eligible { "not " } else { "" }
                ));
            }
            for (&sid, &rid) in &b.streams {
                let r = w.reqs.get(&rid).ok_or_else(|| {
                    format!("lost: stream {sid} of connection {id} carries gone request {rid}")
                })?;
                if !matches!(r.state, ReqState::Stream { seq: q, conn, sid: x } if q == *seq && conn == id && x == sid)
                    || r.meta.shard != s
                    || r.meta.server != b.server
                {
                    return Err(format!(
                        "H2-streams: stream {sid} of connection {id} carries request {rid}, which is {:?}",
                        r.state
                    ));
                }
            }
            on_shard += open as u64;
        }
        for (server, seq) in &sh.avail {
            if sh.busy.get(seq).is_none_or(|b| b.server != *server) {
                return Err(format!(
                    "H2-avail: shard {s} lists busy entry {seq}, which is not busy"
                ));
            }
        }
        if sh.streams != on_shard {
            return Err(format!(
                "I4: shard {s} counts {} open streams, its busy connections have {on_shard}",
                sh.streams
            ));
        }
        streams_total += on_shard;
        let mut shared = BTreeMap::new();
        for a in &sh.acquiring {
            if !w.is_h2(a.server) {
                return Err(format!(
                    "H2: an HTTP/2 acquisition for HTTP/1.1 server {}",
                    a.server.0
                ));
            }
            if a.shared && shared.insert(a.server, a.leader).is_some() {
                return Err(format!(
                    "H2-connect: two shared acquisitions in progress to server {} on shard {s}",
                    a.server.0
                ));
            }
            if !a.shared && (!a.waiters.is_empty() || a.connect_at.is_none()) {
                return Err("H2-connect: a private acquisition with waiters, or asking".into());
            }
            let leader_ok = w.reqs.get(&a.leader).is_some_and(|r| {
                r.meta.shard == s
                    && r.meta.server == a.server
                    && match a.connect_at {
                        None => matches!(r.state, ReqState::Waiting(_)),
                        Some(_) => matches!(r.state, ReqState::Connecting { leader: true }),
                    }
            });
            if !leader_ok {
                return Err(format!(
                    "lost: leader {} of an acquisition on shard {s} is {:?}",
                    a.leader,
                    w.reqs.get(&a.leader).map(|r| &r.state)
                ));
            }
            for &rid in &a.waiters {
                match w.reqs.get(&rid) {
                    Some(r)
                        if matches!(r.state, ReqState::Connecting { leader: false })
                            && r.meta.shard == s
                            && r.meta.server == a.server => {}
                    other => {
                        return Err(format!(
                            "lost: waiter {rid} of an acquisition on shard {s} is {:?}",
                            other.map(|r| &r.state)
                        ))
                    }
                }
            }
        }
    }
    let (mut streaming, mut connecting) = (0u64, 0usize);
    for r in w.reqs.values() {
        match r.state {
            ReqState::Stream { .. } => streaming += 1,
            ReqState::Connecting { .. } => connecting += 1,
            // Only the leader of its shard's acquisition asks other shards.
            ReqState::Waiting(_) if w.is_h2(r.meta.server) => {
                let leads = w.shards[r.meta.shard]
                    .acquiring
                    .iter()
                    .any(|a| a.shared && a.server == r.meta.server && a.connect_at.is_none());
                if !leads {
                    return Err(
                        "H2-connect: an HTTP/2 request asks another shard but leads no acquisition"
                            .into(),
                    );
                }
            }
            _ => {}
        }
    }
    if streaming != streams_total {
        return Err(format!(
            "lost: {streaming} requests on streams, {streams_total} streams open"
        ));
    }
    let in_connects: usize = w
        .shards
        .iter()
        .flat_map(|s| &s.acquiring)
        .map(|a| usize::from(a.connect_at.is_some()) + a.waiters.len())
        .sum();
    if connecting != in_connects {
        return Err(format!(
            "lost: {connecting} requests wait for connects that hold {in_connects}"
        ));
    }
    Ok(())
}

/// No request is lost: each one issued is in flight or ended exactly once.
fn requests_accounted(w: &World) -> Res {
    if (w.reqs.len() + w.done.len()) as u64 != w.next_req {
        return Err(format!(
            "lost: {} requests issued, {} in flight, {} ended",
            w.next_req,
            w.reqs.len(),
            w.done.len()
        ));
    }
    Ok(())
}

/// I3: every waiting request has a pending ticket with a deadline in the future and
/// within one ask timeout, and its shard's driver holds it as that ticket's waiter; no
/// request has waited longer than one timeout per shard; a waiter the driver holds is a
/// waiting request or one that vanished, each in one place only.
fn i3_bounded_waits(w: &World) -> Res {
    let now = w.now();
    let timeout = std::time::Duration::from_millis(w.cfg.ask_timeout);
    let mut per_shard = vec![0usize; w.cfg.n_shards];
    let mut held = BTreeMap::new();
    for (s, sh) in w.shards.iter().enumerate() {
        for (ticket, &rid) in sh.driver.waiters() {
            per_shard[s] += 1;
            if let Some(prev) = held.insert(rid, ticket) {
                return Err(format!(
                    "I3: request {rid} waits on {prev:?} and {ticket:?}"
                ));
            }
            let started = match (w.reqs.get(&rid), w.vanished.get(&rid)) {
                (Some(req), None) => {
                    if !matches!(req.state, ReqState::Waiting(t) if t == ticket)
                        || req.meta.shard != s
                    {
                        return Err(format!("I3: request {rid} not waiting on {ticket:?}"));
                    }
                    req.meta.started
                }
                (None, Some(meta)) if meta.shard == s => meta.started,
                _ => return Err(format!("I3: shard {s} holds waiter {rid}, which is gone")),
            };
            let deadline = sh.driver.deadline(ticket).ok_or(format!(
                "I3: request {rid} waits on a ticket that is not pending"
            ))?;
            if deadline > now + timeout {
                return Err(format!("I3: ticket {ticket:?} deadline beyond one timeout"));
            }
            let bound = (w.cfg.n_shards as u64) * (w.cfg.ask_timeout + 5);
            if w.tick - started > bound {
                return Err(format!("I3: request {rid} waited more than {bound} ms"));
            }
        }
    }
    for (rid, r) in &w.reqs {
        if let ReqState::Waiting(t) = r.state {
            if w.shards[r.meta.shard].driver.waiter(t) != Some(rid) {
                return Err(format!(
                    "I3: request {rid} waits on {t:?} but its driver does not hold it"
                ));
            }
        }
    }
    for rid in w.vanished.keys() {
        if !held.contains_key(rid) {
            return Err(format!("I3: vanished request {rid} is held by no driver"));
        }
    }
    for (s, sh) in w.shards.iter().enumerate() {
        if per_shard[s] > sh.driver.pending() {
            return Err(format!(
                "I3: shard {s} has more waiters than pending tickets"
            ));
        }
        if let Some(d) = sh.driver.next_deadline() {
            if d <= now {
                return Err(format!(
                    "I3: shard {s} has a deadline past that nobody polled"
                ));
            }
        }
    }
    Ok(())
}

/// I4: gauges equal what the world holds, per shard and server; sums match totals;
/// counters balance across shards; the takeover identity holds.
fn i4_counters(w: &World) -> Res {
    let mut grand = ServerStats::default();
    for (s, sh) in w.shards.iter().enumerate() {
        let mut shard_sum = ServerStats::default();
        for server in 0..w.cfg.n_servers {
            let id = ServerId(server as u32);
            let st = sh.pool.stats(id);
            let (mut idle, mut safe) = (0u64, 0u64);
            for (k, sv, _) in sh.pool.iter() {
                if sv == id {
                    match sh.pool.info(k).map(|i| i.2) {
                        Some(ConnClass::Idle) => idle += 1,
                        Some(ConnClass::Safe) => safe += 1,
                        None => return Err("iter listed a stale key".into()),
                    }
                }
            }
            // A busy HTTP/2 connection counts once, however many streams it carries.
            let used = w
                .reqs
                .values()
                .filter(|r| {
                    r.meta.shard == s
                        && r.meta.server == id
                        && matches!(r.state, ReqState::Active { .. })
                })
                .count() as u64
                + sh.busy
                    .values()
                    .filter(|b| b.server == id && b.counted)
                    .count() as u64;
            if (st.idle_cur, st.safe_cur, st.used_cur) != (idle, safe, used) {
                return Err(format!(
                    "I4: shard {s} server {server}: gauges idle/safe/used {}/{}/{} but world holds {idle}/{safe}/{used}",
                    st.idle_cur, st.safe_cur, st.used_cur
                ));
            }
            if st.idle_cur + st.safe_cur != sh.pool.idle_count(id) as u64 {
                return Err("I4: idle_count disagrees with gauges".into());
            }
            if st.max_used < st.used_cur {
                return Err("I4: max_used below used_cur".into());
            }
            shard_sum.add(st);
        }
        if shard_sum != sh.pool.totals() {
            return Err(format!("I4: shard {s} servers do not sum to its totals"));
        }
        grand.add(&shard_sum);
        if !sh.driver.identity_holds() {
            return Err(format!(
                "I4: shard {s} takeover identity broken: {:?} {:?}",
                sh.driver.taker_stats(),
                sh.driver.owner_stats()
            ));
        }
        let o = sh.driver.owner_stats();
        if o.reserve_received != o.granted + o.denied {
            return Err(format!("I4: shard {s} owner identity broken: {o:?}"));
        }
    }
    let t = &w.tally;
    if grand.connect != t.connected {
        return Err(format!("I4: connect {} != {}", grand.connect, t.connected));
    }
    if grand.reuse + t.adopted_dead != t.reused_local + t.adopted || grand.adopted != t.adopted {
        return Err(format!("I4: reuse/adopted drift {grand:?} {t:?}"));
    }
    let owner_granted: u64 = w
        .shards
        .iter()
        .map(|s| s.driver.owner_stats().granted)
        .sum();
    if grand.taken_over != owner_granted {
        return Err("I4: taken_over != owner grants".into());
    }
    if grand.adopted_idle != t.adopt_idle_pooled || grand.grant_returned != t.grant_returned {
        return Err("I4: adopted_idle/grant_returned drift".into());
    }
    Ok(())
}

/// I5: every grant sent is in flight, delivered, or adopted idle; none vanish.
fn i5_grants_balance(w: &World) -> Res {
    let sent: u64 = w
        .shards
        .iter()
        .map(|s| {
            let o = s.driver.owner_stats();
            o.granted - o.grant_returned - o.grant_closed
        })
        .sum();
    let in_flight = w
        .flights
        .iter()
        .filter(|f| matches!(f.msg, Msg::Grant { .. }))
        .count() as u64;
    if sent != in_flight + w.tally.grants_received {
        return Err(format!(
            "I5: {sent} grants sent, {in_flight} in flight, {} received",
            w.tally.grants_received
        ));
    }
    let late: u64 = w
        .shards
        .iter()
        .map(|s| s.driver.taker_stats().late_grant_adopted)
        .sum();
    if late != w.tally.adopt_idle_calls || w.tally.grants_received != w.tally.adopted + late {
        return Err(format!(
            "I5: late grants {late} vs adopt_idle calls {:?}",
            w.tally
        ));
    }
    Ok(())
}

/// I6: a connection closed "by policy" was refused by a pool for that reason: the pools'
/// refusal counters match the closes the world recorded, so no protocol close can pass
/// itself off as a limit.
fn i6_policy_closes(w: &World) -> Res {
    let (mut max_idle, mut max_reuse) = (0, 0);
    for sh in &w.shards {
        let t = sh.pool.totals();
        max_idle += t.rejected_max_idle;
        max_reuse += t.rejected_max_reuse;
    }
    let closed = |r| w.tally.closes.get(&Close::Policy(r)).copied().unwrap_or(0);
    let (c_idle, c_reuse) = (closed(R::MaxIdle), closed(R::MaxReuse));
    if (c_idle, c_reuse) != (max_idle, max_reuse) {
        return Err(format!(
            "I6: {c_idle} connections closed for max-idle and {c_reuse} for max-reuse, but the pools refused {max_idle} and {max_reuse}"
        ));
    }
    Ok(())
}

/// After the final drain: nothing open, nothing pending, every gauge at zero.
fn rest(w: &World) -> Res {
    if !w.open.is_empty() || !w.reqs.is_empty() || !w.flights.is_empty() || !w.vanished.is_empty() {
        return Err(format!(
            "I4: not at rest: {} open, {} requests, {} vanished, {} messages",
            w.open.len(),
            w.reqs.len(),
            w.vanished.len(),
            w.flights.len()
        ));
    }
    if !w.srv.is_empty() || w.done.len() as u64 != w.next_req {
        return Err(format!(
            "lost: at rest {} server sides open, {} of {} requests ended",
            w.srv.len(),
            w.done.len(),
            w.next_req
        ));
    }
    for (s, sh) in w.shards.iter().enumerate() {
        if !sh.busy.is_empty()
            || !sh.avail.is_empty()
            || !sh.acquiring.is_empty()
            || sh.streams != 0
        {
            return Err(format!(
                "I4: shard {s} not at rest: {} busy, {} avail, {} acquiring, {} streams",
                sh.busy.len(),
                sh.avail.len(),
                sh.acquiring.len(),
                sh.streams
            ));
        }
        let t = sh.pool.totals();
        if t.idle_cur + t.safe_cur + t.used_cur != 0 {
            return Err(format!("I4: shard {s} gauges not zero after drain: {t:?}"));
        }
        if sh.driver.pending() != 0 || sh.driver.waiters().next().is_some() {
            return Err(format!("I3: shard {s} has pending tickets at rest"));
        }
        let st = sh.driver.taker_stats();
        if st.asked != st.resolved() {
            return Err(format!("I4: shard {s} asked != resolved at rest: {st:?}"));
        }
    }
    Ok(())
}
