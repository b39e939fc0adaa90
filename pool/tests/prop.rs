//! Property test: random sequences of pool operations against a plain model.
//!
//! The model keeps each server's pooled connections in a `Vec` and recomputes every
//! choice (reuse mode, safe before idle, LIFO, limits, purge oldest first, down) the
//! slow, obvious way; after each operation the pool must have returned the same
//! connection and show the same counters.

use std::time::Instant;

use proptest::prelude::*;
use ringway_pool::{
    Allowed, IdleKey, IdlePool, PoolConfig, PutResult, RejectReason, ReuseMode, ServerId,
    ServerStats,
};

const SERVERS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Connect(usize),
    Checkout(usize, bool),
    Checkin(usize),
    Release(usize),
    Remove(usize),
    Purge,
    Down(usize, bool),
    Takeover(usize),
    Adopted(usize),
    AdoptIdle(usize, u32),
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..SERVERS;
    prop_oneof![
        4 => s.clone().prop_map(Op::Connect),
        5 => (s.clone(), any::<bool>()).prop_map(|(s, f)| Op::Checkout(s, f)),
        6 => any::<usize>().prop_map(Op::Checkin),
        1 => any::<usize>().prop_map(Op::Release),
        2 => any::<usize>().prop_map(Op::Remove),
        2 => Just(Op::Purge),
        1 => (s.clone(), any::<bool>()).prop_map(|(s, d)| Op::Down(s, d)),
        2 => s.clone().prop_map(Op::Takeover),
        1 => s.clone().prop_map(Op::Adopted),
        1 => (s, 1u32..5).prop_map(|(s, u)| Op::AdoptIdle(s, u)),
        1 => Just(Op::Drain),
    ]
}

fn config() -> impl Strategy<Value = PoolConfig> {
    (
        prop_oneof![
            Just(ReuseMode::Never),
            Just(ReuseMode::Safe),
            Just(ReuseMode::Aggressive),
            Just(ReuseMode::Always)
        ],
        0usize..5,
        prop_oneof![Just(None), (1u32..5).prop_map(Some)],
    )
        .prop_map(|(reuse, max_idle, max_reuse)| PoolConfig {
            reuse,
            max_idle_per_server: max_idle,
            max_reuse,
            low_idle: 0,
        })
}

#[derive(Clone, Copy, Debug)]
struct Pooled {
    id: u64,
    uses: u32,
    seq: u64,
    key: IdleKey,
}

#[derive(Default, Debug)]
struct MServer {
    pooled: Vec<Pooled>,
    down: bool,
    st: ServerStats,
}

struct Model {
    cfg: PoolConfig,
    servers: Vec<MServer>,
    seq: u64,
}

impl Model {
    fn newest(&self, s: usize, allowed: Allowed) -> Option<usize> {
        let sv = &self.servers[s];
        if sv.down {
            return None;
        }
        let pick = |safe: bool| {
            (0..sv.pooled.len())
                .filter(|&i| (sv.pooled[i].uses > 1) == safe)
                .max_by_key(|&i| sv.pooled[i].seq)
        };
        let safe = matches!(allowed, Allowed::SafeOnly | Allowed::Any);
        let idle = matches!(allowed, Allowed::Any);
        safe.then(|| pick(true))
            .flatten()
            .or_else(|| idle.then(|| pick(false)).flatten())
    }

    fn take(&mut self, s: usize, i: usize) -> Pooled {
        let p = self.servers[s].pooled.remove(i);
        let st = &mut self.servers[s].st;
        if p.uses > 1 {
            st.safe_cur -= 1;
        } else {
            st.idle_cur -= 1;
        }
        p
    }

    /// The reason a put is refused, or None; counts rejections like the pool.
    fn refuse(&mut self, s: usize, uses: u32) -> Option<RejectReason> {
        let sv = &mut self.servers[s];
        if sv.down {
            return Some(RejectReason::ServerDown);
        }
        if self.cfg.reuse == ReuseMode::Never {
            return Some(RejectReason::ReuseNever);
        }
        if self.cfg.max_reuse.is_some_and(|m| uses >= m) {
            sv.st.rejected_max_reuse += 1;
            return Some(RejectReason::MaxReuse);
        }
        if sv.pooled.len() >= self.cfg.max_idle_per_server {
            sv.st.rejected_max_idle += 1;
            return Some(RejectReason::MaxIdle);
        }
        None
    }

    fn pooled(&mut self, s: usize, id: u64, uses: u32, key: IdleKey) {
        self.seq += 1;
        let sv = &mut self.servers[s];
        sv.pooled.push(Pooled {
            id,
            uses,
            seq: self.seq,
            key,
        });
        if uses > 1 {
            sv.st.safe_cur += 1;
        } else {
            sv.st.idle_cur += 1;
        }
    }

    fn use_one(&mut self, s: usize) {
        let st = &mut self.servers[s].st;
        st.used_cur += 1;
        st.max_used = st.max_used.max(st.used_cur);
    }
}

fn check_put(
    m: &mut Model,
    s: usize,
    id: u64,
    uses: u32,
    r: PutResult<u64>,
) -> Result<(), TestCaseError> {
    let want = m.refuse(s, uses);
    match (r, want) {
        (PutResult::Pooled(k), None) => {
            m.pooled(s, id, uses, k);
            Ok(())
        }
        (PutResult::Rejected(c, why), Some(w)) => {
            prop_assert_eq!(c, id);
            prop_assert_eq!(why, w);
            Ok(())
        }
        (r, w) => Err(TestCaseError::fail(format!("put: pool {r:?}, model {w:?}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn pool_matches_model(cfg in config(), ops in prop::collection::vec(op(), 1..120)) {
        let now = Instant::now();
        let mut pool: IdlePool<u64> = IdlePool::new(cfg.clone(), SERVERS);
        let mut m = Model { cfg, servers: (0..SERVERS).map(|_| MServer::default()).collect(), seq: 0 };
        let mut in_use: Vec<(usize, u64, u32)> = Vec::new();
        let mut keys: Vec<IdleKey> = Vec::new();
        let mut next_id = 0u64;
        for op in ops {
            match op {
                Op::Connect(s) => {
                    pool.connected(ServerId(s as u32));
                    m.servers[s].st.connect += 1;
                    m.use_one(s);
                    in_use.push((s, next_id, 0));
                    next_id += 1;
                }
                Op::Checkout(s, first) => {
                    let got = pool.checkout(ServerId(s as u32), first);
                    let want = m.newest(s, m.cfg.reuse.allowed(first));
                    match (got, want) {
                        (None, None) => {}
                        (Some(c), Some(i)) => {
                            let p = m.take(s, i);
                            prop_assert_eq!((c.conn, c.uses), (p.id, p.uses));
                            m.servers[s].st.reuse += 1;
                            m.use_one(s);
                            in_use.push((s, c.conn, c.uses));
                        }
                        (g, w) => prop_assert!(false, "checkout: pool {:?}, model {:?}", g, w),
                    }
                }
                Op::Checkin(i) | Op::Release(i) if in_use.is_empty() => { let _ = i; }
                Op::Checkin(i) => {
                    let (s, id, uses) = in_use.swap_remove(i % in_use.len());
                    let r = pool.checkin(ServerId(s as u32), id, uses + 1, now);
                    m.servers[s].st.used_cur -= 1;
                    check_put(&mut m, s, id, uses + 1, r)?;
                }
                Op::Release(i) => {
                    let (s, _, _) = in_use.swap_remove(i % in_use.len());
                    pool.released(ServerId(s as u32));
                    m.servers[s].st.used_cur -= 1;
                }
                Op::Remove(i) => {
                    if keys.is_empty() { continue; }
                    let k = keys[i % keys.len()];
                    let got = pool.remove(k);
                    let mut want = None;
                    for s in 0..SERVERS {
                        if let Some(j) = m.servers[s].pooled.iter().position(|p| p.key == k) {
                            want = Some(m.take(s, j).id);
                            m.servers[s].st.removed += 1;
                        }
                    }
                    prop_assert_eq!(got, want);
                }
                Op::Purge => {
                    let mut got = pool.purge();
                    let mut want = Vec::new();
                    for s in 0..SERVERS {
                        let sv = &m.servers[s];
                        let pooled = sv.pooled.len() as u64;
                        let need = sv.st.max_used.max(sv.st.need_est);
                        let excess = (sv.st.used_cur + pooled).saturating_sub(need).min(pooled);
                        let n = excess.div_ceil(2);
                        for _ in 0..n {
                            let i = (0..m.servers[s].pooled.len()).min_by_key(|&i| m.servers[s].pooled[i].seq).unwrap();
                            want.push((ServerId(s as u32), m.take(s, i).id));
                        }
                        let st = &mut m.servers[s].st;
                        st.purged += n;
                        st.need_est = (st.need_est + st.max_used) / 2;
                        st.max_used = st.used_cur;
                    }
                    got.sort();
                    want.sort();
                    prop_assert_eq!(got, want);
                }
                Op::Down(s, down) => {
                    let mut got = pool.set_server_down(ServerId(s as u32), down);
                    m.servers[s].down = down;
                    let mut want: Vec<u64> = Vec::new();
                    if down {
                        while !m.servers[s].pooled.is_empty() {
                            want.push(m.take(s, 0).id);
                        }
                        m.servers[s].st.drained_down += want.len() as u64;
                    }
                    got.sort();
                    want.sort();
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(pool.is_server_down(ServerId(s as u32)), down);
                }
                Op::Takeover(s) => {
                    let got = pool.take_for_takeover(ServerId(s as u32));
                    let want = m.newest(s, Allowed::Any).map(|i| m.take(s, i));
                    prop_assert_eq!(got, want.map(|p| (p.id, p.uses)));
                    if want.is_some() {
                        m.servers[s].st.taken_over += 1;
                    }
                }
                Op::Adopted(s) => {
                    pool.adopted(ServerId(s as u32));
                    let st = &mut m.servers[s].st;
                    st.adopted += 1;
                    st.reuse += 1;
                    m.use_one(s);
                    in_use.push((s, next_id, 1));
                    next_id += 1;
                }
                Op::AdoptIdle(s, uses) => {
                    let r = pool.adopt_idle(ServerId(s as u32), next_id, uses, now);
                    let pooled = matches!(r, PutResult::Pooled(_));
                    check_put(&mut m, s, next_id, uses, r)?;
                    if pooled {
                        m.servers[s].st.adopted_idle += 1;
                    }
                    next_id += 1;
                }
                Op::Drain => {
                    let mut got = pool.drain();
                    let mut want = Vec::new();
                    for s in 0..SERVERS {
                        while !m.servers[s].pooled.is_empty() {
                            want.push((ServerId(s as u32), m.take(s, 0).id));
                        }
                    }
                    got.sort();
                    want.sort();
                    prop_assert_eq!(got, want);
                }
            }
            for s in 0..SERVERS {
                prop_assert_eq!(pool.stats(ServerId(s as u32)), &m.servers[s].st, "server {}", s);
                prop_assert_eq!(pool.idle_count(ServerId(s as u32)), m.servers[s].pooled.len());
                for p in &m.servers[s].pooled {
                    keys.push(p.key);
                }
            }
            keys.sort_by_key(|k| format!("{k:?}"));
            keys.dedup();
        }
        // Finish every request and drain: all gauges return to zero.
        for (s, _, _) in in_use.drain(..) {
            pool.released(ServerId(s as u32));
        }
        pool.drain();
        let t = pool.totals();
        prop_assert_eq!((t.idle_cur, t.safe_cur, t.used_cur), (0, 0, 0));
    }
}
