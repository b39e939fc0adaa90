//! Unit tests for the takeover state machines: scan order, low-idle, tickets, deadlines,
//! late grants and the counter identity.

use std::time::{Duration, Instant};

use super::*;
use crate::{PoolConfig, ReuseMode};

const S: ServerId = ServerId(0);
const T: Duration = Duration::from_millis(10);

fn taker(shard: usize, n: usize, low_idle: usize) -> Taker {
    Taker::new(
        shard,
        n,
        TakerConfig {
            low_idle,
            ask_timeout: T,
        },
    )
}

fn ask(n: Next) -> (usize, Ticket) {
    match n {
        Next::Ask { shard, ticket } => (shard, ticket),
        other => panic!("expected Ask, got {other:?}"),
    }
}

#[test]
fn scan_asks_each_candidate_once_starting_at_a_rotating_index() {
    let now = Instant::now();
    let n = 5;
    let mut t = taker(2, n, 0);
    let published = [1, 0, 9, 3, 1]; // shard 1 has none, shard 2 is us
    let mut starts = Vec::new();
    for _ in 0..n {
        let (first, mut ticket) = ask(t.begin(S, Allowed::Any, &published, now));
        let mut asked = vec![first];
        loop {
            match t.on_deny(ticket, now) {
                Next::Ask { shard, ticket: tk } => {
                    asked.push(shard);
                    ticket = tk;
                }
                Next::ConnectNew(ConnectReason::Exhausted) => break,
                other => panic!("{other:?}"),
            }
        }
        let mut sorted = asked.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 3, 4], "every candidate exactly once");
        starts.push(first);
        assert!(t.identity_holds());
    }
    // The start rotates: over n attempts every candidate leads at least once (bug #3).
    let mut s = starts.clone();
    s.sort();
    s.dedup();
    assert_eq!(s, vec![0, 3, 4], "{starts:?}");
    assert_eq!(t.stats().denied, 15);
    assert_eq!(t.pending(), 0);
}

#[test]
fn low_idle_and_no_candidate_and_reuse_forbids_connect_new() {
    let now = Instant::now();
    let mut t = taker(0, 4, 4);
    assert_eq!(
        t.begin(S, Allowed::Any, &[0, 1, 1, 1], now),
        Next::ConnectNew(ConnectReason::LowIdle)
    );
    assert!(matches!(
        t.begin(S, Allowed::Any, &[0, 2, 1, 1], now),
        Next::Ask { .. }
    ));
    let mut t = taker(0, 3, 0);
    assert_eq!(
        t.begin(S, Allowed::Any, &[5, 0, 0], now),
        Next::ConnectNew(ConnectReason::NoCandidate)
    );
    assert_eq!(
        t.begin(S, Allowed::Nothing, &[5, 5, 5], now),
        Next::ConnectNew(ConnectReason::ReuseForbids)
    );
    let s = t.stats();
    assert_eq!((s.attempts, s.no_candidate, s.asked), (1, 1, 0));
    // A short published table (fewer entries than shards) is not an error.
    assert_eq!(
        t.begin(S, Allowed::Any, &[], now),
        Next::ConnectNew(ConnectReason::NoCandidate)
    );
}

#[test]
fn timeouts_move_on_and_every_ticket_resolves_once() {
    let now = Instant::now();
    let mut t = taker(0, 3, 0);
    let (_, t1) = ask(t.begin(S, Allowed::Any, &[0, 1, 1], now));
    assert_eq!(t.deadline(t1), Some(now + T));
    assert_eq!(t.next_deadline(), Some(now + T));
    assert!(t.poll_timeouts(now + T / 2).is_empty());
    let out = t.poll_timeouts(now + T);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, t1);
    let (_, t2) = ask(out[0].1);
    assert_eq!(t.deadline(t2), Some(now + 2 * T));
    // Late grant for t1: adopted idle, never dropped; not counted in `granted`.
    assert_eq!(t.on_grant(t1), GrantFate::AdoptIdle);
    assert_eq!(t.stats().late_grant_adopted, 1);
    assert_eq!(t.on_deny(t1, now), Next::WaiterGone);
    assert_eq!(t.stats().late_deny, 1);
    assert!(t.identity_holds());
    // The second ask is granted in time.
    assert_eq!(t.on_grant(t2), GrantFate::Deliver);
    let s = t.stats();
    assert_eq!((s.asked, s.granted, s.timeout, s.denied), (2, 1, 1, 0));
    assert!(t.identity_holds());
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn abandoned_ticket_stays_pending_until_resolved() {
    let now = Instant::now();
    let mut t = taker(1, 3, 0);
    let (_, tk) = ask(t.begin(S, Allowed::Any, &[1, 0, 1], now));
    assert!(t.abandon(tk));
    assert!(!t.abandon(tk));
    assert_eq!(t.pending(), 1);
    assert_eq!(t.on_grant(tk), GrantFate::AdoptIdle);
    let s = t.stats();
    assert_eq!((s.granted, s.late_grant_adopted, s.abandoned), (1, 1, 1));
    // Abandoned then denied or timed out: no next step.
    let (_, tk) = ask(t.begin(S, Allowed::Any, &[1, 0, 1], now));
    t.abandon(tk);
    assert_eq!(t.on_deny(tk, now), Next::WaiterGone);
    let (_, tk) = ask(t.begin(S, Allowed::Any, &[1, 0, 1], now));
    t.abandon(tk);
    assert!(t.poll_timeouts(now + T).is_empty());
    assert_eq!(t.pending(), 0);
    assert!(t.identity_holds());
}

#[test]
fn reservation_and_send_failures_resolve_the_ticket() {
    let now = Instant::now();
    let mut t = taker(0, 3, 0);
    let (_, tk) = ask(t.begin(S, Allowed::Any, &[0, 1, 1], now));
    assert_eq!(
        t.on_reserve_failed(tk),
        Next::ConnectNew(ConnectReason::ReservationFailed)
    );
    let (first, tk) = ask(t.begin(S, Allowed::Any, &[0, 1, 1], now));
    let (second, tk2) = ask(t.on_send_failed(tk, now));
    assert_ne!(first, second);
    assert_eq!(
        t.on_send_failed(tk2, now),
        Next::ConnectNew(ConnectReason::Exhausted)
    );
    let s = t.stats();
    assert_eq!((s.asked, s.reservation_failed, s.channel_full), (3, 1, 2));
    assert!(t.identity_holds());
    assert_eq!(t.on_reserve_failed(tk), Next::WaiterGone);
}

#[test]
fn tickets_are_unique_per_taker_and_name_their_shard() {
    let now = Instant::now();
    let mut a = taker(1, 2, 0);
    let mut b = taker(0, 2, 0);
    let (_, ta) = ask(a.begin(S, Allowed::Any, &[1, 1], now));
    let (_, tb) = ask(b.begin(S, Allowed::Any, &[1, 1], now));
    assert_ne!(ta, tb);
    let (_, ta2) = ask(a.begin(S, Allowed::Any, &[1, 1], now));
    assert_ne!(ta, ta2);
    assert_eq!(a.pending_ask(ta), Some((S, 0)));
}

#[test]
fn owner_grants_what_the_taker_may_use_and_takes_back_unsent_grants() {
    let cfg = PoolConfig {
        reuse: ReuseMode::Always,
        max_idle_per_server: 4,
        max_reuse: None,
        low_idle: 0,
    };
    let mut pool: IdlePool<u32> = IdlePool::new(cfg, 1);
    pool.connected(S);
    let _ = pool.checkin(S, 7, 1, Instant::now()); // idle, not safe
    let mut o = Owner::new();
    assert!(matches!(
        o.handle_reserve(&mut pool, S, Ticket(1), Allowed::SafeOnly),
        Msg::Deny { ticket: Ticket(1) }
    ));
    let reply = o.handle_reserve(&mut pool, S, Ticket(2), Allowed::Any);
    assert!(matches!(
        reply,
        Msg::Grant {
            conn: 7,
            uses: 1,
            ..
        }
    ));
    assert_eq!(pool.idle_count(S), 0);
    assert!(matches!(
        o.reply_failed(&mut pool, reply, Instant::now()),
        Some(PutResult::Pooled(_))
    ));
    assert_eq!(pool.idle_count(S), 1);
    let s = o.stats();
    assert_eq!(
        (s.reserve_received, s.granted, s.denied, s.grant_returned),
        (2, 1, 1, 1)
    );
    assert!(o
        .reply_failed(
            &mut pool,
            Msg::<u32>::Deny { ticket: Ticket(1) },
            Instant::now()
        )
        .is_none());
    assert_eq!(o.stats().deny_unsent, 1);
}

/// HAProxy bug #3: an off-by-one in the scan skipped a thread. For every shard count,
/// every taker shard and every start index, each other shard is asked exactly once.
#[test]
fn scan_never_skips_a_shard_for_any_size_or_start() {
    let now = Instant::now();
    for n in 2..=16 {
        for me in 0..n {
            let mut t = taker(me, n, 0);
            let published = vec![1; n];
            for _ in 0..n {
                let (first, mut ticket) = ask(t.begin(S, Allowed::Any, &published, now));
                let mut asked = vec![first];
                while let Next::Ask { shard, ticket: tk } = t.on_deny(ticket, now) {
                    asked.push(shard);
                    ticket = tk;
                }
                asked.sort();
                let want: Vec<usize> = (0..n).filter(|&i| i != me).collect();
                assert_eq!(asked, want, "n={n} me={me}");
            }
            assert!(t.identity_holds());
        }
    }
}

#[test]
fn begin_with_reads_counts_through_a_function() {
    let now = Instant::now();
    let mut t = taker(0, 4, 2);
    let counts = [7usize, 0, 0, 1];
    assert_eq!(
        t.begin_with(S, Allowed::Any, |i| usize::from(i == 3), now),
        Next::ConnectNew(ConnectReason::LowIdle)
    );
    // Own count (7) counts towards low_idle but is never asked.
    assert_eq!(ask(t.begin_with(S, Allowed::Any, |i| counts[i], now)).0, 3);
}
