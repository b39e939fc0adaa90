//! Unit tests for the idle pool: reuse modes, LIFO, limits, purge, keys, server down.

use std::time::Instant;

use super::*;
use crate::ReuseMode;

const S0: ServerId = ServerId(0);
const S1: ServerId = ServerId(1);

fn cfg(reuse: ReuseMode, max_idle: usize) -> PoolConfig {
    PoolConfig {
        reuse,
        max_idle_per_server: max_idle,
        max_reuse: None,
        low_idle: 0,
    }
}

/// Opens a connection, "runs" requests on it and checks it in with `uses`.
fn put(p: &mut IdlePool<u32>, s: ServerId, conn: u32, uses: u32) -> IdleKey {
    p.connected(s);
    match p.checkin(s, conn, uses, Instant::now()) {
        PutResult::Pooled(k) => k,
        PutResult::Rejected(_, why) => panic!("rejected: {why:?}"),
    }
}

#[test]
fn reuse_modes_choose_per_first_and_later_request() {
    // (mode, first request gets, later request gets) with one idle (1) and one safe (2).
    let cases = [
        (ReuseMode::Safe, None, Some(2)),
        (ReuseMode::Aggressive, Some(2), Some(2)),
        (ReuseMode::Always, Some(2), Some(2)),
    ];
    for (mode, first, later) in cases {
        for (first_request, want) in [(true, first), (false, later)] {
            let mut p = IdlePool::new(cfg(mode, 8), 1);
            put(&mut p, S0, 1, 1);
            put(&mut p, S0, 2, 2);
            let got = p.checkout(S0, first_request).map(|c| c.conn);
            assert_eq!(got, want, "{mode} first_request={first_request}");
        }
    }
    // Aggressive first request never takes an idle-only connection.
    let mut p = IdlePool::new(cfg(ReuseMode::Aggressive, 8), 1);
    put(&mut p, S0, 1, 1);
    assert!(p.checkout(S0, true).is_none());
    let c = p.checkout(S0, false).unwrap();
    assert_eq!((c.conn, c.uses, c.class), (1, 1, ConnClass::Idle));
    // Always takes an idle one for a first request.
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 8), 1);
    put(&mut p, S0, 1, 1);
    assert_eq!(p.checkout(S0, true).map(|c| c.conn), Some(1));
}

#[test]
fn never_pools_nothing_and_checkout_is_none() {
    let mut p = IdlePool::new(cfg(ReuseMode::Never, 8), 1);
    p.connected(S0);
    match p.checkin(S0, 7, 1, Instant::now()) {
        PutResult::Rejected(7, RejectReason::ReuseNever) => {}
        other => panic!("{other:?}"),
    }
    assert!(p.checkout(S0, false).is_none());
    assert_eq!(p.stats(S0).used_cur, 0);
}

#[test]
fn lifo_most_recent_first_and_safe_before_idle() {
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 8), 1);
    put(&mut p, S0, 1, 1);
    put(&mut p, S0, 2, 3);
    put(&mut p, S0, 3, 1);
    put(&mut p, S0, 4, 2);
    let order: Vec<u32> = std::iter::from_fn(|| p.checkout(S0, false).map(|c| c.conn)).collect();
    assert_eq!(order, vec![4, 2, 3, 1]);
    assert_eq!(p.stats(S0).reuse, 4);
    assert_eq!(p.stats(S0).used_cur, 4);
}

#[test]
fn max_idle_rejects_and_counts_and_zero_keeps_nothing() {
    let mut p = IdlePool::new(cfg(ReuseMode::Safe, 2), 2);
    put(&mut p, S0, 1, 1);
    put(&mut p, S0, 2, 1);
    p.connected(S0);
    assert!(matches!(
        p.checkin(S0, 3, 1, Instant::now()),
        PutResult::Rejected(3, RejectReason::MaxIdle)
    ));
    assert_eq!(p.stats(S0).rejected_max_idle, 1);
    put(&mut p, S1, 4, 1); // per server
    assert_eq!((p.idle_count(S0), p.idle_count(S1)), (2, 1));

    let mut z = IdlePool::new(cfg(ReuseMode::Always, 0), 1);
    z.connected(S0);
    assert!(matches!(
        z.checkin(S0, 1, 1, Instant::now()),
        PutResult::Rejected(1, RejectReason::MaxIdle)
    ));
    assert_eq!(z.stats(S0).used_cur, 0);
}

#[test]
fn max_reuse_rejects_a_connection_that_carried_its_quota() {
    let mut c = cfg(ReuseMode::Always, 8);
    c.max_reuse = Some(3);
    let mut p = IdlePool::new(c, 1);
    put(&mut p, S0, 1, 2);
    let co = p.checkout(S0, false).unwrap();
    assert_eq!(co.uses, 2);
    assert!(matches!(
        p.checkin(S0, co.conn, co.uses + 1, Instant::now()),
        PutResult::Rejected(1, RejectReason::MaxReuse)
    ));
    let s = p.stats(S0);
    assert_eq!(
        (s.rejected_max_reuse, s.used_cur, s.pooled_cur()),
        (1, 0, 0)
    );
}

#[test]
fn counters_follow_connect_checkout_checkin_release() {
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 8), 1);
    p.connected(S0);
    p.connected(S0);
    assert_eq!((p.stats(S0).connect, p.stats(S0).used_cur), (2, 2));
    p.released(S0);
    assert!(matches!(
        p.checkin(S0, 1, 1, Instant::now()),
        PutResult::Pooled(_)
    ));
    let s = p.stats(S0).clone();
    assert_eq!(
        (s.used_cur, s.idle_cur, s.safe_cur, s.max_used),
        (0, 1, 0, 2)
    );
    let co = p.checkout(S0, false).unwrap();
    assert!(matches!(
        p.checkin(S0, co.conn, 2, Instant::now()),
        PutResult::Pooled(_)
    ));
    let s = p.stats(S0);
    assert_eq!((s.reuse, s.idle_cur, s.safe_cur, s.used_cur), (1, 0, 1, 0));
    assert_eq!(p.totals().safe_cur, 1);
}

#[test]
fn purge_halves_the_excess_and_converges_to_zero() {
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 64), 1);
    for i in 0..16 {
        p.connected(S0);
        let _ = i;
    }
    for i in 0..16 {
        assert!(matches!(
            p.checkin(S0, i, 1, Instant::now()),
            PutResult::Pooled(_)
        ));
    }
    assert_eq!(p.stats(S0).max_used, 16);
    let mut history = vec![p.idle_count(S0)];
    let mut purged = 0;
    for _ in 0..20 {
        purged += p.purge().len();
        history.push(p.idle_count(S0));
    }
    // need 16 -> excess 0; then need_est 8, 4, 2, 1, 0: each delay closes half the excess.
    assert_eq!(&history[..8], &[16, 16, 12, 8, 5, 3, 1, 0]);
    assert_eq!(*history.last().unwrap(), 0);
    assert_eq!(p.stats(S0).purged, purged as u64);
    assert_eq!(p.stats(S0).need_est, 0);
}

#[test]
fn purge_closes_at_least_one_and_keeps_what_traffic_needs() {
    // HAProxy bug #5: an excess of one must still be purged.
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 8), 1);
    put(&mut p, S0, 1, 1);
    p.purge(); // max_used 1 -> need 1: nothing
    assert_eq!(p.idle_count(S0), 1);
    p.purge(); // need_est (0+1)/2 = 0, max_used 0 -> excess 1 -> closes 1
    assert_eq!(p.idle_count(S0), 0);

    // Steady traffic of 2 concurrent keeps 2 idle.
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 8), 1);
    put(&mut p, S0, 1, 1);
    put(&mut p, S0, 2, 1);
    for _ in 0..10 {
        let a = p.checkout(S0, false).unwrap();
        let b = p.checkout(S0, false).unwrap();
        let _ = p.checkin(S0, a.conn, a.uses + 1, Instant::now());
        let _ = p.checkin(S0, b.conn, b.uses + 1, Instant::now());
        assert!(p.purge().is_empty());
    }
    assert_eq!(p.idle_count(S0), 2);
}

#[test]
fn purge_closes_oldest_first_across_idle_and_safe() {
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 8), 1);
    put(&mut p, S0, 1, 2); // safe, oldest
    put(&mut p, S0, 2, 1); // idle
    put(&mut p, S0, 3, 2); // safe
    put(&mut p, S0, 4, 1); // idle, newest
    p.purge(); // max_used was 1: excess 3 -> closes 2
    assert_eq!(p.idle_count(S0), 2);
    let left: Vec<u32> = std::iter::from_fn(|| p.checkout(S0, false).map(|c| c.conn)).collect();
    assert_eq!(left, vec![3, 4]);
}

#[test]
fn stale_key_never_matches_a_new_entry() {
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 8), 1);
    let k1 = put(&mut p, S0, 1, 1);
    assert_eq!(p.get_mut(k1).copied(), Some(1));
    assert_eq!(p.remove(k1), Some(1));
    assert_eq!(p.stats(S0).removed, 1);
    let k2 = put(&mut p, S0, 2, 1); // reuses the same slab slot
    assert_ne!(k1, k2);
    assert_eq!(p.remove(k1), None);
    assert!(p.get_mut(k1).is_none());
    assert!(p.info(k1).is_none());
    assert_eq!(p.idle_count(S0), 1);
    let (s, uses, class, _) = p.info(k2).unwrap();
    assert_eq!((s, uses, class), (S0, 1, ConnClass::Idle));
    // A key whose connection was checked out is stale too.
    assert!(p.checkout(S0, false).is_some());
    assert_eq!(p.remove(k2), None);
}

#[test]
fn remove_keeps_list_links_intact() {
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 8), 1);
    let keys: Vec<IdleKey> = (0..5).map(|i| put(&mut p, S0, i, 1)).collect();
    assert_eq!(p.remove(keys[2]), Some(2)); // middle
    assert_eq!(p.remove(keys[4]), Some(4)); // newest
    assert_eq!(p.remove(keys[0]), Some(0)); // oldest
    let left: Vec<u32> = std::iter::from_fn(|| p.checkout(S0, false).map(|c| c.conn)).collect();
    assert_eq!(left, vec![3, 1]);
    assert_eq!(p.stats(S0).idle_cur, 0);
}

#[test]
fn server_down_drains_and_refuses_until_up() {
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 8), 2);
    put(&mut p, S0, 1, 1);
    put(&mut p, S0, 2, 2);
    put(&mut p, S1, 3, 1);
    p.connected(S0); // one in use
    let mut drained = p.set_server_down(S0, true);
    drained.sort();
    assert_eq!(drained, vec![1, 2]);
    assert!(p.is_server_down(S0));
    assert_eq!(p.stats(S0).drained_down, 2);
    assert!(p.checkout(S0, false).is_none());
    assert!(p.take_for_takeover(S0).is_none());
    assert!(matches!(
        p.checkin(S0, 9, 1, Instant::now()),
        PutResult::Rejected(9, RejectReason::ServerDown)
    ));
    assert_eq!(p.stats(S0).used_cur, 0);
    assert_eq!(p.idle_count(S1), 1, "other servers untouched");
    assert!(p.set_server_down(S0, false).is_empty());
    put(&mut p, S0, 4, 1);
    assert_eq!(p.checkout(S0, false).map(|c| c.conn), Some(4));
}

#[test]
fn takeover_owner_and_taker_counters() {
    let mut owner = IdlePool::new(cfg(ReuseMode::Always, 8), 1);
    let mut taker: IdlePool<u32> = IdlePool::new(cfg(ReuseMode::Always, 8), 1);
    put(&mut owner, S0, 1, 1);
    put(&mut owner, S0, 2, 2);
    assert!(owner
        .take_for_takeover_allowed(S0, Allowed::Nothing)
        .is_none());
    assert_eq!(owner.take_for_takeover(S0), Some((2, 2)));
    let s = owner.stats(S0);
    assert_eq!(
        (s.taken_over, s.safe_cur, s.idle_cur, s.used_cur),
        (1, 0, 1, 0)
    );
    taker.adopted(S0);
    let s = taker.stats(S0);
    assert_eq!((s.adopted, s.reuse, s.used_cur, s.connect), (1, 1, 1, 0));
    assert!(matches!(
        taker.checkin(S0, 2, 3, Instant::now()),
        PutResult::Pooled(_)
    ));
    // Late grant into the idle pool, and a returned grant.
    let (c, u) = owner.take_for_takeover(S0).unwrap();
    assert!(matches!(
        taker.adopt_idle(S0, c, u, Instant::now()),
        PutResult::Pooled(_)
    ));
    assert_eq!(taker.stats(S0).adopted_idle, 1);
    let (c, u) = taker.take_for_takeover(S0).unwrap();
    assert!(matches!(
        taker.return_granted(S0, c, u, Instant::now()),
        PutResult::Pooled(_)
    ));
    assert_eq!(taker.stats(S0).grant_returned, 1);
    assert_eq!(taker.idle_count(S0), 2);
    assert_eq!(taker.stats(S0).used_cur, 0);
}

#[test]
fn drain_returns_everything_and_unknown_server_is_harmless() {
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 8), 2);
    put(&mut p, S0, 1, 1);
    put(&mut p, S1, 2, 3);
    let mut all = p.drain();
    all.sort();
    assert_eq!(all, vec![(S0, 1), (S1, 2)]);
    assert_eq!(p.totals().pooled_cur(), 0);
    assert_eq!(p.iter().count(), 0);

    let bad = ServerId(9);
    p.connected(bad);
    p.released(bad);
    p.adopted(bad);
    assert!(p.checkout(bad, false).is_none());
    assert!(matches!(
        p.checkin(bad, 5, 1, Instant::now()),
        PutResult::Rejected(5, RejectReason::UnknownServer)
    ));
    assert!(p.is_server_down(bad));
    assert_eq!(p.stats(bad), &ServerStats::default());
    assert_eq!(p.n_servers(), 2);
}

#[test]
fn a_dead_checkout_is_not_a_reuse() {
    let mut p = IdlePool::new(cfg(ReuseMode::Always, 8), 1);
    put(&mut p, S0, 1, 1);
    put(&mut p, S0, 2, 1);
    let dead = p.checkout(S0, false).unwrap();
    assert_eq!(dead.conn, 2);
    p.discard_checkout(S0);
    let s = p.stats(S0).clone();
    assert_eq!((s.reuse, s.used_cur, s.idle_cur, s.removed), (0, 0, 1, 1));
    let live = p.checkout(S0, false).unwrap();
    assert_eq!(live.conn, 1);
    assert_eq!(p.stats(S0).reuse, 1);
}

#[test]
fn per_server_limits_override_the_pools_and_grow_keeps_connections() {
    let mut p: IdlePool<u32> = IdlePool::new(cfg(ReuseMode::Safe, 8), 2);
    // S1's backend says: keep one idle, never reuse on a session's first request but
    // allow safe ones (aggressive).
    p.set_limits(S1, cfg(ReuseMode::Aggressive, 1));
    assert_eq!(p.limits(S1).max_idle_per_server, 1);
    assert_eq!(p.limits(S0).max_idle_per_server, 8);
    put(&mut p, S1, 10, 2);
    p.connected(S1);
    match p.checkin(S1, 11, 2, Instant::now()) {
        PutResult::Rejected(11, RejectReason::MaxIdle) => {}
        other => panic!("S1 keeps one idle: {other:?}"),
    }
    // Aggressive: a first request may take a safe connection (Safe mode would refuse).
    assert!(p.checkout(S1, true).is_some());
    put(&mut p, S0, 20, 2);
    assert!(
        p.checkout(S0, true).is_none(),
        "S0 keeps the pool's safe mode"
    );
    // A reload adds a server: existing connections stay, the new slot works.
    put(&mut p, S0, 21, 1);
    p.grow(3);
    assert_eq!(p.n_servers(), 3);
    assert_eq!(p.idle_count(S0), 2);
    put(&mut p, ServerId(2), 30, 1);
    assert_eq!(p.idle_count(ServerId(2)), 1);
}
