//! Unit tests for the takeover driver: every path a ticket can take from `begin` to its
//! end, with the counter identity checked after every call.

use std::time::{Duration, Instant};

use super::*;
use crate::{ConnectReason, PoolConfig, ReuseMode};

const S: ServerId = ServerId(0);
const T: Duration = Duration::from_millis(10);

type D = Driver<u32, &'static str>;

fn driver(shard: usize, n: usize) -> D {
    Driver::new(
        shard,
        n,
        TakerConfig {
            low_idle: 0,
            ask_timeout: T,
        },
    )
}

fn pool() -> IdlePool<u32> {
    IdlePool::new(
        PoolConfig {
            reuse: ReuseMode::Always,
            max_idle_per_server: 4,
            max_reuse: None,
            low_idle: 0,
        },
        1,
    )
}

/// A pool holding one idle connection `conn` to `S`.
fn pool_with(conn: u32) -> IdlePool<u32> {
    let mut p = pool();
    p.connected(S);
    assert!(matches!(
        p.checkin(S, conn, 1, Instant::now()),
        PutResult::Pooled(_)
    ));
    p
}

/// The identity from the takeover module docs, spelled out, plus the driver's own.
#[track_caller]
fn check(d: &D) {
    let s = d.taker_stats();
    assert_eq!(
        s.asked,
        s.granted
            + s.denied
            + s.timeout
            + s.reservation_failed
            + s.channel_full
            + d.pending() as u64,
        "{s:?}"
    );
    assert!(d.identity_holds(), "{s:?}");
}

fn ask_of(n: Next) -> (usize, Ticket) {
    match n {
        Next::Ask { shard, ticket } => (shard, ticket),
        other => panic!("expected Ask, got {other:?}"),
    }
}

/// `begin` and `ask` for waiter `w`; returns the owner shard and the ticket.
fn start(d: &mut D, w: &'static str, published: &[usize], now: Instant) -> (usize, Ticket) {
    let (shard, ticket) = ask_of(d.begin(S, Allowed::Any, |i| published[i], now));
    check(d);
    let (to, msg) = d
        .ask::<u32>(ticket, w)
        .expect("a fresh ticket can be asked");
    check(d);
    assert_eq!(to, shard);
    assert!(matches!(
        msg,
        Msg::Reserve { from, server: S, ticket: t, allowed: Allowed::Any } if t == ticket && from == d.shard()
    ));
    (shard, ticket)
}

/// The owner shard answers a `Reserve` for `ticket` from `pool`.
fn answer(o: &mut D, pool: &mut IdlePool<u32>, ticket: Ticket) -> Msg<u32> {
    let m = o.on_reserve(pool, S, ticket, Allowed::Any);
    check(o);
    m
}

fn grant_parts(m: Msg<u32>) -> (Ticket, u32, u32) {
    match m {
        Msg::Grant {
            ticket, conn, uses, ..
        } => (ticket, conn, uses),
        other => panic!("expected Grant, got {other:?}"),
    }
}

#[test]
fn grant_is_delivered_to_its_waiter_and_counted_as_adopted() {
    let now = Instant::now();
    let (mut t, mut o) = (driver(0, 2), driver(1, 2));
    let (mut tp, mut op) = (pool(), pool_with(7));
    let (shard, ticket) = start(&mut t, "req", &[0, 1], now);
    assert_eq!(shard, 1);
    assert_eq!(t.waiter(ticket), Some(&"req"));
    assert_eq!(t.deadline(ticket), Some(now + T));
    assert_eq!(t.next_deadline(), Some(now + T));
    let (tk, conn, uses) = grant_parts(answer(&mut o, &mut op, ticket));
    assert_eq!(op.stats(S).taken_over, 1);
    match t.on_grant(&mut tp, tk, S, conn, uses, now) {
        GrantEffect::Deliver {
            waiter: "req",
            server: S,
            conn: 7,
            uses: 1,
        } => {}
        other => panic!("{other:?}"),
    }
    check(&t);
    let st = tp.stats(S);
    assert_eq!((st.adopted, st.reuse, st.used_cur), (1, 1, 1));
    assert_eq!(t.taker_stats().granted, 1);
    assert_eq!((t.pending(), t.waiters().count()), (0, 0));
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn late_grant_after_timeout_is_adopted_idle_never_dropped() {
    let now = Instant::now();
    let (mut t, mut o) = (driver(0, 2), driver(1, 2));
    let (mut tp, mut op) = (pool(), pool_with(7));
    let (_, ticket) = start(&mut t, "req", &[0, 1], now);
    assert!(t.poll_timeouts(now + T / 2).is_empty());
    check(&t);
    let woken = t.poll_timeouts(now + T);
    check(&t);
    assert_eq!(
        woken,
        vec![("req", Next::ConnectNew(ConnectReason::Exhausted))]
    );
    let (tk, conn, uses) = grant_parts(answer(&mut o, &mut op, ticket));
    match t.on_grant(&mut tp, tk, S, conn, uses, now + T) {
        GrantEffect::AdoptedIdle(PutResult::Pooled(key)) => {
            assert_eq!(tp.info(key).map(|i| i.0), Some(S));
        }
        other => panic!("{other:?}"),
    }
    check(&t);
    let st = tp.stats(S);
    assert_eq!((st.adopted_idle, st.adopted, st.used_cur), (1, 0, 0));
    assert_eq!(tp.idle_count(S), 1);
    let s = t.taker_stats();
    assert_eq!((s.timeout, s.granted, s.late_grant_adopted), (1, 0, 1));
}

#[test]
fn grant_for_an_abandoned_request_is_adopted_idle() {
    let now = Instant::now();
    let (mut t, mut o) = (driver(0, 2), driver(1, 2));
    let (mut tp, mut op) = (pool(), pool_with(7));
    let (_, ticket) = start(&mut t, "req", &[0, 1], now);
    assert_eq!(t.abandon(ticket), Some("req"));
    check(&t);
    assert_eq!(t.abandon(ticket), None);
    assert_eq!(t.pending(), 1, "the ticket waits for its answer (I5)");
    let (tk, conn, uses) = grant_parts(answer(&mut o, &mut op, ticket));
    assert!(matches!(
        t.on_grant(&mut tp, tk, S, conn, uses, now),
        GrantEffect::AdoptedIdle(PutResult::Pooled(_))
    ));
    check(&t);
    let s = t.taker_stats();
    assert_eq!((s.granted, s.abandoned, s.late_grant_adopted), (1, 1, 1));
    assert_eq!(t.pending(), 0);
}

#[test]
fn late_grant_refused_by_the_pool_is_handed_back_to_close() {
    let now = Instant::now();
    let (mut t, mut o) = (driver(0, 2), driver(1, 2));
    let mut tp = pool();
    let mut op = pool_with(7);
    let (_, ticket) = start(&mut t, "req", &[0, 1], now);
    t.abandon(ticket);
    let _ = tp.set_server_down(S, true);
    let (tk, conn, uses) = grant_parts(answer(&mut o, &mut op, ticket));
    assert!(matches!(
        t.on_grant(&mut tp, tk, S, conn, uses, now),
        GrantEffect::AdoptedIdle(PutResult::Rejected(7, crate::RejectReason::ServerDown))
    ));
    check(&t);
}

#[test]
fn deny_moves_the_waiter_to_the_next_candidate_then_connects_anew() {
    let now = Instant::now();
    let (mut t, mut o1, mut o2) = (driver(0, 3), driver(1, 3), driver(2, 3));
    let (mut p1, mut p2) = (pool(), pool());
    let (first, ticket) = start(&mut t, "req", &[0, 1, 1], now);
    let (o, p) = if first == 1 {
        (&mut o1, &mut p1)
    } else {
        (&mut o2, &mut p2)
    };
    assert!(matches!(answer(o, p, ticket), Msg::Deny { .. }));
    let (w, next) = t.on_deny(ticket, now).expect("the waiter is handed back");
    check(&t);
    assert_eq!(w, "req");
    let (second, t2) = ask_of(next);
    assert_ne!(second, first);
    assert!(t.waiter(t2).is_none(), "not registered until asked");
    let (to, _) = t.ask::<()>(t2, w).expect("next candidate");
    check(&t);
    assert_eq!(to, second);
    assert_eq!(
        t.on_deny(t2, now),
        Some(("req", Next::ConnectNew(ConnectReason::Exhausted)))
    );
    check(&t);
    // A deny for a ticket nobody waits on any more is counted late and hands back nothing.
    assert_eq!(t.on_deny(ticket, now), None);
    check(&t);
    let s = t.taker_stats();
    assert_eq!((s.asked, s.denied, s.late_deny), (2, 2, 1));
    assert_eq!(o1.owner_stats().denied + o2.owner_stats().denied, 1);
}

#[test]
fn one_poll_wakes_every_waiter_whose_ticket_expired() {
    let now = Instant::now();
    let mut t = driver(0, 3);
    let published = [0, 1, 1];
    let (_, ta) = start(&mut t, "a", &published, now);
    let (_, tb) = start(&mut t, "b", &published, now);
    let (_, tc) = start(&mut t, "c", &published, now + T / 2);
    assert_eq!(t.pending(), 3);
    let mut woken = t.poll_timeouts(now + T);
    check(&t);
    woken.sort_by_key(|(w, _)| *w);
    let names: Vec<_> = woken.iter().map(|(w, _)| *w).collect();
    assert_eq!(names, ["a", "b"], "c's deadline is later");
    assert_eq!(t.waiter(tc), Some(&"c"));
    assert!(t.waiter(ta).is_none() && t.waiter(tb).is_none());
    // Each woken waiter goes on to its other candidate, with a fresh deadline.
    for (w, next) in woken {
        let (_, tk) = ask_of(next);
        assert_eq!(t.deadline(tk), Some(now + 2 * T));
        t.ask::<()>(tk, w).expect("next candidate");
        check(&t);
    }
    let woken = t.poll_timeouts(now + 3 * T);
    check(&t);
    assert_eq!(woken.len(), 3);
    for (w, n) in woken {
        match (w, n) {
            // c's first ticket: it still has a candidate to ask, nobody waits on it yet.
            ("c", Next::Ask { ticket, .. }) => assert!(t.abandon(ticket).is_none()),
            ("a" | "b", Next::ConnectNew(ConnectReason::Exhausted)) => {}
            other => panic!("{other:?}"),
        }
    }
    check(&t);
    let s = t.taker_stats();
    assert_eq!((s.asked, s.timeout, s.reservation_failed), (6, 5, 1));
    assert_eq!(t.pending(), 0);
}

/// The engine's "grant raced the timer": the deadline passes, but the grant lands before
/// anyone polls. The grant wins: delivered, and the poll that follows wakes nobody for
/// that ticket (one outcome per waiter), while it still wakes the others.
#[test]
fn grant_that_beats_the_poll_is_delivered_and_not_also_timed_out() {
    let now = Instant::now();
    let (mut t, mut o) = (driver(0, 2), driver(1, 2));
    let (mut tp, mut op) = (pool(), pool_with(7));
    let (_, t1) = start(&mut t, "raced", &[0, 1], now);
    let (_, t2) = start(&mut t, "other", &[0, 1], now);
    let late = now + T + T / 2;
    let (tk, conn, uses) = grant_parts(answer(&mut o, &mut op, t1));
    assert!(matches!(
        t.on_grant(&mut tp, tk, S, conn, uses, late),
        GrantEffect::Deliver {
            waiter: "raced",
            ..
        }
    ));
    check(&t);
    // The deny for the other ticket also beats the poll.
    let got = t.on_deny(t2, late);
    assert_eq!(
        got,
        Some(("other", Next::ConnectNew(ConnectReason::Exhausted)))
    );
    assert!(t.poll_timeouts(late).is_empty());
    check(&t);
    let s = t.taker_stats();
    assert_eq!((s.granted, s.denied, s.timeout), (1, 1, 0));
    // And the other order: the poll first, then the grant is late and adopted idle.
    let mut op = pool_with(8);
    let (_, t3) = start(&mut t, "slow", &[0, 1], late);
    assert_eq!(t.poll_timeouts(late + T).len(), 1);
    let (tk, conn, uses) = grant_parts(answer(&mut o, &mut op, t3));
    assert!(matches!(
        t.on_grant(&mut tp, tk, S, conn, uses, late + T),
        GrantEffect::AdoptedIdle(PutResult::Pooled(_))
    ));
    check(&t);
}

#[test]
fn full_channel_hands_the_waiter_back_for_the_next_candidate() {
    let now = Instant::now();
    let mut t = driver(0, 3);
    let (first, ticket) = start(&mut t, "req", &[0, 1, 1], now);
    let (w, next) = t.send_failed(ticket, now).expect("waiter back");
    check(&t);
    assert_eq!(w, "req");
    assert!(t.waiter(ticket).is_none());
    let (second, t2) = ask_of(next);
    assert_ne!(first, second);
    t.ask::<()>(t2, w)
        .expect("same reservation, next candidate");
    check(&t);
    assert_eq!(
        t.send_failed(t2, now),
        Some(("req", Next::ConnectNew(ConnectReason::Exhausted)))
    );
    check(&t);
    assert_eq!(t.send_failed(t2, now), None, "already resolved");
    check(&t);
    let s = t.taker_stats();
    assert_eq!((s.asked, s.channel_full), (2, 2));
    assert_eq!(t.pending(), 0);
}

#[test]
fn failed_reservation_sends_nothing_and_connects_anew() {
    let now = Instant::now();
    let mut t = driver(0, 2);
    let (_, ticket) = ask_of(t.begin(S, Allowed::Any, |i| usize::from(i == 1), now));
    assert_eq!(
        t.reserve_failed(ticket),
        Next::ConnectNew(ConnectReason::ReservationFailed)
    );
    check(&t);
    assert_eq!(t.pending(), 0);
    assert!(
        t.ask::<()>(ticket, "late").is_err(),
        "resolved tickets are not asked"
    );
    // A ticket whose Reserve went out is left to its answer.
    let (_, t2) = start(&mut t, "req", &[0, 1], now);
    assert_eq!(t.reserve_failed(t2), Next::WaiterGone);
    check(&t);
    assert_eq!(t.waiter(t2), Some(&"req"));
    assert!(t.ask::<()>(t2, "twice").is_err(), "asked once only");
    assert_eq!(t.taker_stats().reservation_failed, 1);
}

#[test]
fn unsent_grant_goes_back_into_the_owners_pool() {
    let now = Instant::now();
    let mut o = driver(1, 2);
    let mut op = pool_with(7);
    let reply = answer(&mut o, &mut op, Ticket(1));
    assert_eq!(op.idle_count(S), 0);
    assert!(matches!(
        o.reply_failed(&mut op, reply, now),
        Some(PutResult::Pooled(_))
    ));
    check(&o);
    assert_eq!(op.idle_count(S), 1);
    assert_eq!(op.stats(S).grant_returned, 1);
    // While the server went down meanwhile: handed back to be closed by policy.
    let reply = answer(&mut o, &mut op, Ticket(2));
    let _ = op.set_server_down(S, true);
    assert!(matches!(
        o.reply_failed(&mut op, reply, now),
        Some(PutResult::Rejected(7, crate::RejectReason::ServerDown))
    ));
    // An unsent deny needs nothing: the taker's deadline resolves its ticket.
    let deny = answer(&mut o, &mut op, Ticket(3));
    assert!(matches!(deny, Msg::Deny { ticket: Ticket(3) }));
    assert!(o.reply_failed(&mut op, deny, now).is_none());
    check(&o);
    let s = o.owner_stats();
    assert_eq!(
        (s.reserve_received, s.granted, s.denied),
        (3, 2, 1),
        "{s:?}"
    );
    assert_eq!((s.grant_returned, s.grant_closed, s.deny_unsent), (1, 1, 1));
}

#[test]
fn undeliverable_grant_is_pooled_and_counted_as_late() {
    let now = Instant::now();
    let (mut t, mut o) = (driver(0, 2), driver(1, 2));
    let (mut tp, mut op) = (pool(), pool_with(7));
    let (_, ticket) = start(&mut t, "vanished", &[0, 1], now);
    let (tk, conn, uses) = grant_parts(answer(&mut o, &mut op, ticket));
    let GrantEffect::Deliver {
        server, conn, uses, ..
    } = t.on_grant(&mut tp, tk, S, conn, uses, now)
    else {
        panic!("expected Deliver");
    };
    // The hand-off failed: the request went away without telling the driver.
    assert!(matches!(
        t.undeliverable(&mut tp, server, conn, uses, now),
        PutResult::Pooled(_)
    ));
    check(&t);
    let st = tp.stats(S);
    assert_eq!(
        (st.adopted, st.reuse, st.used_cur, st.adopted_idle),
        (0, 0, 0, 1),
        "as if the grant had been late: {st:?}"
    );
    assert_eq!(tp.idle_count(S), 1);
    let s = t.taker_stats();
    assert_eq!(
        (s.granted, s.abandoned, s.late_grant_adopted),
        (1, 1, 1),
        "{s:?}"
    );
}

#[test]
fn abandon_before_the_ask_resolves_the_ticket_at_once() {
    let now = Instant::now();
    let mut t = driver(0, 2);
    let (_, ticket) = ask_of(t.begin(S, Allowed::Any, |i| usize::from(i == 1), now));
    assert_eq!(t.abandon(ticket), None);
    check(&t);
    assert_eq!(t.pending(), 0, "nothing was sent, nothing can answer");
    let s = t.taker_stats();
    assert_eq!((s.abandoned, s.reservation_failed), (1, 1));
}

/// A ticket that expires before its `ask` (a runtime that waited between the two) wakes
/// nobody, leaves no ticket pending for nobody, and cannot be asked any more.
#[test]
fn ticket_expired_before_its_ask_leaves_nothing_behind() {
    let now = Instant::now();
    let mut t = driver(0, 3);
    let (_, ticket) = ask_of(t.begin(S, Allowed::Any, |i| usize::from(i > 0), now));
    assert!(t.poll_timeouts(now + T).is_empty());
    check(&t);
    assert_eq!(
        t.pending(),
        0,
        "the next candidate's ticket was resolved too"
    );
    assert!(matches!(t.ask::<()>(ticket, "late"), Err("late")));
    let s = t.taker_stats();
    assert_eq!((s.asked, s.timeout, s.reservation_failed), (2, 1, 1));
}

#[test]
fn connect_new_needs_no_ticket() {
    let now = Instant::now();
    let mut t = driver(0, 2);
    assert_eq!(
        t.begin(S, Allowed::Nothing, |_| 5, now),
        Next::ConnectNew(ConnectReason::ReuseForbids)
    );
    assert_eq!(
        t.begin(S, Allowed::Any, |_| 0, now),
        Next::ConnectNew(ConnectReason::NoCandidate)
    );
    check(&t);
    assert_eq!(t.pending(), 0);
}
