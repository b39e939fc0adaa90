//! Micro-benchmarks of the per-shard idle pool and the takeover state machines.
//!
//! Run with `cargo bench -p ringway-pool --bench pool`. Results: `docs/microbench.md`.

use std::hint::black_box;
use std::time::Instant;

use divan::Bencher;
use ringway_pool::{
    GrantFate, IdlePool, Msg, Next, Owner, PoolConfig, PutResult, ReuseMode, ServerId, Taker,
    TakerConfig,
};

fn main() {
    divan::main();
}

const SERVER: ServerId = ServerId(0);

fn config(max_idle: usize) -> PoolConfig {
    PoolConfig {
        reuse: ReuseMode::Always,
        max_idle_per_server: max_idle,
        ..PoolConfig::default()
    }
}

/// A pool holding `n` idle connections (`0..n`) to [`SERVER`], each opened, used for one
/// request and checked in one after the other (so the peak of connections in use is 1).
fn pool_with_idle(n: u32, now: Instant) -> IdlePool<u32> {
    let mut pool = IdlePool::new(config(n as usize), 1);
    for conn in 0..n {
        pool.connected(SERVER);
        assert!(matches!(
            pool.checkin(SERVER, conn, 1, now),
            PutResult::Pooled(_)
        ));
    }
    pool
}

/// One request's worth of pool traffic: check out the most recent of 64 idle connections
/// and check it back in.
#[divan::bench(sample_count = 500, sample_size = 256)]
fn checkout_checkin_64(bencher: Bencher) {
    let now = Instant::now();
    let mut pool = pool_with_idle(64, now);
    bencher.bench_local(|| {
        let c = pool
            .checkout(black_box(SERVER), false)
            .expect("a pooled connection");
        let put = pool.checkin(SERVER, c.conn, c.uses + 1, now);
        debug_assert!(matches!(put, PutResult::Pooled(_)));
        black_box(put);
    });
    assert_eq!(pool.idle_count(SERVER), 64);
}

/// One purge run over 1,000 idle connections after traffic stopped: it closes half of the
/// excess (500, oldest first). Building the pool and dropping the closed list are not timed.
#[divan::bench(sample_count = 500, sample_size = 4)]
fn purge_1000_idle(bencher: Bencher) {
    let now = Instant::now();
    bencher
        .with_inputs(|| pool_with_idle(1000, now))
        .bench_local_refs(|pool| {
            let closed = pool.purge();
            debug_assert_eq!(closed.len(), 500);
            closed
        });
}

/// Two shards: shard 0 (the taker) has nothing idle, shard 1 (the owner) holds `idle`
/// idle connections to [`SERVER`].
struct TwoShards {
    taker: Taker,
    owner: Owner,
    owner_pool: IdlePool<u32>,
    published: [usize; 2],
}

impl TwoShards {
    fn new(idle: u32, now: Instant) -> Self {
        let owner_pool = pool_with_idle(idle, now);
        let published = [0, owner_pool.idle_count(SERVER)];
        TwoShards {
            taker: Taker::new(0, 2, TakerConfig::default()),
            owner: Owner::new(),
            owner_pool,
            published,
        }
    }

    /// `Taker::begin` → `Owner::handle_reserve` → `Taker::on_grant`; returns the grant.
    fn round_trip(&mut self, now: Instant) -> (ServerId, u32, u32) {
        let allowed = ReuseMode::Always.allowed(false);
        let Next::Ask { shard, ticket } = self.taker.begin(SERVER, allowed, &self.published, now)
        else {
            unreachable!("shard 1 publishes idle connections");
        };
        debug_assert_eq!(shard, 1);
        let Msg::Grant {
            ticket,
            server,
            conn,
            uses,
        } = self
            .owner
            .handle_reserve(&mut self.owner_pool, SERVER, ticket, allowed)
        else {
            unreachable!("the owner has idle connections");
        };
        let fate = self.taker.on_grant(black_box(ticket));
        debug_assert_eq!(fate, GrantFate::Deliver);
        (server, conn, uses)
    }
}

/// One takeover round trip through the state machines only, on fresh state each time
/// (a new taker, owner and 4-connection owner pool, built outside the timed part).
#[divan::bench(sample_count = 500, sample_size = 64)]
fn takeover_round_trip(bencher: Bencher) {
    let now = Instant::now();
    bencher
        .with_inputs(|| TwoShards::new(4, now))
        .bench_local_refs(|s| s.round_trip(now));
}

/// The same round trip in a steady loop on long-lived state: the granted connection goes
/// back into the owner's 64-connection pool with `IdlePool::return_granted`, which is
/// timed too.
#[divan::bench(sample_count = 500, sample_size = 64)]
fn takeover_round_trip_and_return(bencher: Bencher) {
    let now = Instant::now();
    let mut s = TwoShards::new(64, now);
    bencher.bench_local(|| {
        let (server, conn, uses) = s.round_trip(now);
        black_box(s.owner_pool.return_granted(server, conn, uses, now))
    });
    assert_eq!(s.owner_pool.idle_count(SERVER), 64);
    assert!(s.taker.identity_holds());
}
