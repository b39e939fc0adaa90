//! Pool-level tests owed to HAProxy's idle-pool bug list (docs/takeover.md, "HAProxy's
//! takeover bugs and the tests that rule them out"). Each test names the HAProxy bug whose
//! ringway equivalent it rules out. They use only the public API, as the engine does;
//! the socket-level ones are in `engine/tests/haproxy_lessons.rs`.

use std::time::{Duration, Instant};

use ringway_pool::{
    Allowed, ConnClass, GrantFate, IdleKey, IdlePool, Msg, Next, Owner, PoolConfig, PutResult,
    RejectReason, ReuseMode, ServerId, Taker, TakerConfig,
};

const S0: ServerId = ServerId(0);

fn cfg(max_idle: usize, max_reuse: Option<u32>) -> PoolConfig {
    PoolConfig {
        reuse: ReuseMode::Always,
        max_idle_per_server: max_idle,
        max_reuse,
        low_idle: 0,
    }
}

/// Opens a connection on `p`, runs `uses` requests on it and pools it.
fn put(p: &mut IdlePool<u64>, s: ServerId, conn: u64, uses: u32) -> IdleKey {
    p.connected(s);
    match p.checkin(s, conn, uses, Instant::now()) {
        PutResult::Pooled(k) => k,
        PutResult::Rejected(_, why) => panic!("conn {conn} rejected: {why:?}"),
    }
}

/// Gauges of one server: (idle_cur, safe_cur, used_cur).
fn gauges(p: &IdlePool<u64>, s: ServerId) -> (u64, u64, u64) {
    let st = p.stats(s);
    (st.idle_cur, st.safe_cur, st.used_cur)
}

/// The gauges agree with what the pool holds (checked through `iter` and `info`).
fn assert_gauges_match(p: &IdlePool<u64>, s: ServerId, used: u64, what: &str) {
    let (mut idle, mut safe) = (0, 0);
    for (k, sv, _) in p.iter() {
        if sv == s {
            match p.info(k).expect("iter lists live keys").2 {
                ConnClass::Idle => idle += 1,
                ConnClass::Safe => safe += 1,
            }
        }
    }
    assert_eq!(gauges(p, s), (idle, safe, used), "{what}");
    assert_eq!(p.idle_count(s) as u64, idle + safe, "{what}");
}

/// One full takeover of a connection to `server` from `owner` to `taker_pool`, as the
/// engine runs it, for a request that is still waiting. Returns the grant's (conn, uses).
fn take_over(
    owner: &mut IdlePool<u64>,
    taker_pool: &mut IdlePool<u64>,
    allowed: Allowed,
    server: ServerId,
) -> Option<(u64, u32)> {
    let now = Instant::now();
    let mut taker = Taker::new(
        0,
        2,
        TakerConfig {
            low_idle: 0,
            ask_timeout: Duration::from_millis(5),
        },
    );
    let published = [taker_pool.idle_count(server), owner.idle_count(server)];
    let Next::Ask { shard: 1, ticket } = taker.begin(server, allowed, &published, now) else {
        return None;
    };
    match Owner::new().handle_reserve(owner, server, ticket, allowed) {
        Msg::Grant {
            ticket,
            server: s,
            conn,
            uses,
        } => {
            assert_eq!(s, server);
            assert_eq!(taker.on_grant(ticket), GrantFate::Deliver);
            taker_pool.adopted(server);
            assert!(taker.identity_holds());
            Some((conn, uses))
        }
        Msg::Deny { ticket } => {
            assert_eq!(
                taker.on_deny(ticket, now),
                Next::ConnectNew(ringway_pool::ConnectReason::Exhausted)
            );
            None
        }
        Msg::Reserve { .. } => unreachable!(),
    }
}

/// HAProxy #2: the TLS layer's state stayed on the old thread; the connection moved
/// without it. A ringway backend connection's only state besides the socket is its
/// request count (`uses`), from which its class (idle/safe) and its `max_reuse` budget
/// follow; it travels in the grant. A safe connection is still safe on the taker, a
/// first request under `aggressive` is only granted a safe one, and the `max_reuse`
/// budget spent on the owner still counts on the taker. (Response bytes buffered for
/// the connection cannot be left behind: a connection with unread bytes is never
/// pooled, see engine/tests/haproxy_lessons.rs.)
#[test]
fn takeover_moves_the_connections_state_with_it() {
    let mut owner = IdlePool::new(cfg(8, Some(4)), 1);
    let mut taker = IdlePool::new(cfg(8, Some(4)), 1);
    put(&mut owner, S0, 1, 1); // idle: carried one request
    put(&mut owner, S0, 2, 3); // safe: carried three

    // An aggressive first request may only use a safe connection: it gets #2 with its count.
    let (conn, uses) = take_over(&mut owner, &mut taker, Allowed::SafeOnly, S0).expect("grant");
    assert_eq!((conn, uses), (2, 3));
    // Only the idle one is left on the owner; another safe-only ask is denied.
    assert!(take_over(&mut owner, &mut taker, Allowed::SafeOnly, S0).is_none());
    // The request on the taker is its 4th: the budget of 4 is spent, it is not pooled.
    match taker.checkin(S0, conn, uses + 1, Instant::now()) {
        PutResult::Rejected(2, RejectReason::MaxReuse) => {}
        other => panic!("a connection at max_reuse was pooled after a takeover: {other:?}"),
    }
    assert_gauges_match(&taker, S0, 0, "taker after the max-reuse close");

    // The idle one moves, carries its second request on the taker, and is safe there.
    let (conn, uses) = take_over(&mut owner, &mut taker, Allowed::Any, S0).expect("grant");
    assert_eq!((conn, uses), (1, 1));
    let PutResult::Pooled(k) = taker.checkin(S0, conn, uses + 1, Instant::now()) else {
        panic!("rejected");
    };
    assert_eq!(
        taker.info(k).map(|i| (i.1, i.2)),
        Some((2, ConnClass::Safe))
    );

    // A late grant (adopted straight into the idle pool) keeps its class too.
    put(&mut owner, S0, 3, 2);
    let (conn, uses) = owner.take_for_takeover(S0).unwrap();
    let PutResult::Pooled(k) = taker.adopt_idle(S0, conn, uses, Instant::now()) else {
        panic!("rejected");
    };
    assert_eq!(taker.info(k).map(|i| i.2), Some(ConnClass::Safe));
    assert_gauges_match(&owner, S0, 0, "owner at the end");
    assert_gauges_match(&taker, S0, 0, "taker at the end");
}

/// HAProxy #4: the taker's idle counter was decremented instead of the owner's. In
/// ringway each shard changes only its own pool's counters: over a chain of takeovers
/// between 4 shards, after every step each shard's gauges equal what that shard holds,
/// the owner's `taken_over` and the taker's `adopted` move together, and the sums over
/// shards balance.
#[test]
fn takeover_counters_change_only_on_the_shard_that_owns_them() {
    const N: usize = 4;
    let mut pools: Vec<IdlePool<u64>> = (0..N).map(|_| IdlePool::new(cfg(64, None), 1)).collect();
    // Shard 0 holds 12 idle connections; every other shard takes some, one at a time.
    for c in 0..12 {
        put(&mut pools[0], S0, c, 1 + (c % 2) as u32);
    }
    let mut in_use: Vec<Vec<(u64, u32)>> = vec![Vec::new(); N];
    for round in 0..12usize {
        let from = if round < 6 { 0 } else { (round % (N - 1)) + 1 };
        let to = (from + 1 + round % (N - 1)) % N;
        let (a, b) = if from < to { (from, to) } else { (to, from) };
        let (lo, hi) = pools.split_at_mut(b);
        let (p_a, p_b) = (&mut lo[a], &mut hi[0]);
        let (owner, taker) = if from < to { (p_a, p_b) } else { (p_b, p_a) };
        let before_owner = owner.stats(S0).clone();
        let before_taker = taker.stats(S0).clone();
        if let Some(got) = take_over(owner, taker, Allowed::Any, S0) {
            let (o, t) = (owner.stats(S0), taker.stats(S0));
            assert_eq!(o.taken_over, before_owner.taken_over + 1);
            assert_eq!(o.used_cur, before_owner.used_cur, "owner's used_cur moved");
            assert_eq!(
                o.pooled_cur() + 1,
                before_owner.pooled_cur(),
                "the owner's pool did not shrink by one"
            );
            assert_eq!(t.adopted, before_taker.adopted + 1);
            assert_eq!(t.used_cur, before_taker.used_cur + 1);
            assert_eq!(
                t.pooled_cur(),
                before_taker.pooled_cur(),
                "the taker's idle counters moved"
            );
            in_use[to].push(got);
        }
        // Half the time the request on the taker ends and its connection is pooled there.
        if round % 2 == 1 {
            if let Some((c, u)) = in_use[to].pop() {
                let _ = pools[to].checkin(S0, c, u + 1, Instant::now());
            }
        }
        for (s, p) in pools.iter().enumerate() {
            assert_gauges_match(
                p,
                S0,
                in_use[s].len() as u64,
                &format!("shard {s} round {round}"),
            );
        }
    }
    let taken: u64 = pools.iter().map(|p| p.stats(S0).taken_over).sum();
    let adopted: u64 = pools.iter().map(|p| p.stats(S0).adopted).sum();
    assert_eq!(taken, adopted);
    assert!(taken >= 6, "only {taken} takeovers happened");
    let pooled: u64 = pools.iter().map(|p| p.idle_count(S0) as u64).sum();
    let used: usize = in_use.iter().map(Vec::len).sum();
    assert_eq!(pooled + used as u64, 12, "connections appeared or vanished");
}

/// HAProxy #5: the last idle connections were never purged (rounding). Once traffic
/// stops, from any pool size the purge closes everything within a logarithmic number of
/// rounds, for every server of the pool (each server's estimate decays on its own).
#[test]
fn purge_always_reaches_zero_once_traffic_stops() {
    for k in 1..=64u64 {
        let mut p = IdlePool::new(cfg(128, None), 3);
        for s in 0..3u32 {
            // Server s had k + s requests in flight at once, then all ended.
            for c in 0..k + s as u64 {
                p.connected(ServerId(s));
                let _ = c;
            }
            for c in 0..k + s as u64 {
                assert!(matches!(
                    p.checkin(ServerId(s), c, 1, Instant::now()),
                    PutResult::Pooled(_)
                ));
            }
        }
        let bound = 3 + 2 * (64 - (k + 2).leading_zeros()) as usize;
        let mut rounds = 0;
        while (0..3).any(|s| p.idle_count(ServerId(s)) > 0) {
            rounds += 1;
            assert!(
                rounds <= bound,
                "{k} idle connections: still {:?} after {bound} purges",
                (0..3)
                    .map(|s| p.idle_count(ServerId(s)))
                    .collect::<Vec<_>>()
            );
            p.purge();
        }
        for s in 0..3u32 {
            let st = p.stats(ServerId(s));
            assert_eq!(st.purged, k + s as u64);
            assert_eq!((st.need_est, st.max_used, st.pooled_cur()), (0, 0, 0));
        }
    }
}

/// HAProxy #10: a hash alignment error meant idle connections never matched their key.
/// ringway's pool is indexed by server id, not hashed: with many servers, each one's
/// connections are found for that server and no other, by checkout and by takeover.
#[test]
fn every_server_finds_its_own_connections_and_no_other() {
    const SERVERS: u32 = 257;
    let mut p = IdlePool::new(cfg(4, None), SERVERS as usize);
    for s in 0..SERVERS {
        put(&mut p, ServerId(s), u64::from(s) * 10, 1);
        put(&mut p, ServerId(s), u64::from(s) * 10 + 1, 2);
    }
    for (k, s, &c) in p.iter() {
        assert_eq!(
            c / 10,
            u64::from(s.0),
            "key {k:?} listed under the wrong server"
        );
    }
    for s in (0..SERVERS).rev() {
        let id = ServerId(s);
        assert_eq!(p.idle_count(id), 2);
        let a = p.checkout(id, false).expect("checkout found nothing");
        assert_eq!((a.conn, a.class), (u64::from(s) * 10 + 1, ConnClass::Safe));
        let (b, _) = p.take_for_takeover(id).expect("takeover found nothing");
        assert_eq!(b, u64::from(s) * 10);
        assert!(p.checkout(id, false).is_none());
        let _ = p.checkin(id, a.conn, a.uses + 1, Instant::now());
        let st = p.stats(id);
        assert_eq!((st.reuse, st.taken_over, st.pooled_cur()), (1, 1, 1));
    }
    assert!(p.checkout(ServerId(SERVERS), false).is_none());
}

/// HAProxy #12 (a freed connection stayed in the tree) and #7 / #15 (a wake-up or a
/// watcher of the old owner acting on a connection that had moved): whichever way a
/// connection leaves the pool — checkout, takeover, purge, server down, removal by the
/// idle check, drain — the key the idle check held for it goes stale, even when a new
/// connection reuses its slot: `get_mut`, `info` and `remove` find nothing, and the new
/// connection is untouched.
#[test]
fn a_key_goes_stale_whichever_way_its_connection_left() {
    type Leave = fn(&mut IdlePool<u64>, IdleKey) -> Vec<u64>;
    let ways: [(&str, Leave); 6] = [
        ("checkout", |p, _| {
            let c = p.checkout(S0, false).unwrap();
            p.released(S0);
            vec![c.conn]
        }),
        ("takeover", |p, _| vec![p.take_for_takeover(S0).unwrap().0]),
        ("purge", |p, _| {
            p.purge();
            p.purge().into_iter().map(|(_, c)| c).collect()
        }),
        ("server down", |p, _| {
            let out = p.set_server_down(S0, true);
            p.set_server_down(S0, false);
            out
        }),
        ("idle check", |p, k| vec![p.remove(k).unwrap()]),
        ("drain", |p, _| {
            p.drain().into_iter().map(|(_, c)| c).collect()
        }),
    ];
    for (what, leave) in ways {
        let mut p = IdlePool::new(cfg(8, None), 1);
        let old = put(&mut p, S0, 1, 1);
        let gone = leave(&mut p, old);
        assert_eq!(gone, vec![1], "{what}");
        assert_gauges_match(&p, S0, 0, what);
        let new = put(&mut p, S0, 2, 1);
        assert_ne!(old, new, "{what}: a new connection got the old key");
        assert!(
            p.get_mut(old).is_none(),
            "{what}: stale key reached a connection"
        );
        assert!(p.info(old).is_none(), "{what}: stale key has info");
        assert!(
            p.remove(old).is_none(),
            "{what}: stale key removed a connection"
        );
        assert_eq!(p.get_mut(new).copied(), Some(2), "{what}");
        assert_gauges_match(&p, S0, 0, what);
    }
}

/// HAProxy #14: used/idle counters drifted or wrapped, notably when a connection
/// scheduled for purge was reinserted. In ringway purge pops synchronously, so the
/// nearest thing is a connection that leaves and comes back while the pool changes
/// under it: a grant that could not be sent returns while a purge ran, or while the
/// server went down (then it is refused and closed), and a late grant lands on a
/// taker whose pool is full. The gauges stay exact at every step (a decrement below
/// zero would also fail a debug assertion inside the pool).
#[test]
fn connections_coming_back_never_make_the_counters_drift() {
    let now = Instant::now();
    let mut owner = IdlePool::new(cfg(3, None), 1);
    let mut o = Owner::new();
    for c in 0..3 {
        put(&mut owner, S0, c, 1 + c as u32);
    }
    // A grant leaves; a purge runs while it is in flight; the grant cannot be sent.
    let grant = o.handle_reserve(&mut owner, S0, ringway_pool::Ticket(1), Allowed::Any);
    assert!(matches!(grant, Msg::Grant { .. }));
    assert_gauges_match(&owner, S0, 0, "grant in flight");
    let purged = owner.purge().len() + owner.purge().len();
    assert!(purged > 0, "the purge closed nothing");
    assert_gauges_match(&owner, S0, 0, "after purge");
    match o.reply_failed(&mut owner, grant, now) {
        Some(PutResult::Pooled(_)) => {}
        other => panic!("an unsent grant did not come back: {other:?}"),
    }
    assert_gauges_match(&owner, S0, 0, "grant returned after purge");
    assert_eq!(o.stats().grant_returned, 1);

    // Again, but the server goes down while the grant is in flight: it is refused.
    let grant = o.handle_reserve(&mut owner, S0, ringway_pool::Ticket(2), Allowed::Any);
    let drained = owner.set_server_down(S0, true);
    assert_gauges_match(&owner, S0, 0, "server down");
    match o.reply_failed(&mut owner, grant, now) {
        Some(PutResult::Rejected(_, RejectReason::ServerDown)) => {}
        other => panic!("a grant came back into a down server's pool: {other:?}"),
    }
    assert_eq!(o.stats().grant_closed, 1);
    assert_gauges_match(&owner, S0, 0, "grant refused while down");
    owner.set_server_down(S0, false);
    let _ = drained;

    // A late grant onto a full taker pool is refused by max-idle, not counted.
    let mut taker = IdlePool::new(cfg(1, None), 1);
    put(&mut taker, S0, 10, 1);
    match taker.adopt_idle(S0, 11, 2, now) {
        PutResult::Rejected(11, RejectReason::MaxIdle) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(taker.stats(S0).adopted_idle, 0);
    assert_gauges_match(&taker, S0, 0, "late grant refused");

    // Purge everything on both: all back to zero, nothing wrapped.
    for p in [&mut owner, &mut taker] {
        for _ in 0..10 {
            p.purge();
        }
        assert_eq!(gauges(p, S0), (0, 0, 0));
        assert!(p.stats(S0).need_est < 1 << 32 && p.stats(S0).max_used < 1 << 32);
    }
}
