//! Shards: one glommio executor per CPU (or per `--shards`), each owning its listeners,
//! client connections, idle backend pool, takeover state and metrics.
//!
//! [`Proxy::start`] checks `RLIMIT_MEMLOCK`, binds every shard's `SO_REUSEPORT` listener
//! up front (so a bad address is an error before anything runs), starts the executors and
//! waits until each has joined the shard mesh. Shards share only [`Shared`]: the
//! configuration, the server table, the published idle counts (each entry written by its
//! owning shard only) and the stop flag. Everything else crosses shards as a message.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::{LocalExecutorBuilder, Placement as GPlacement};
use ringway_pool::{
    FaultPlan, FaultPoint, IdlePool, Owner, PoolConfig, ServerId, Taker, TakerConfig,
};

use crate::backend::IdleConn;
use crate::config::{Config, Placement};
use crate::mesh::{self, ShardMsg};
use crate::metrics::{ShardMetrics, Snapshot};
use crate::oneshot;
use crate::route::{RoundRobin, Router};

/// Bound of each shard-to-shard channel. A full channel is a miss, never a wait.
pub const MESH_CAPACITY: usize = 1024;
/// How often a shard looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// One backend server, as the shards see it. Its index in [`Shared::servers`] is its
/// [`ServerId`] everywhere (pool, metrics, messages).
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub addr: SocketAddr,
    pub backend: usize,
}

/// What all shards read. Written once before the shards start, except the atomics.
pub struct Shared {
    pub config: Config,
    pub router: Router,
    pub servers: Vec<ServerInfo>,
    /// For each backend, the range of its servers' ids.
    pub backend_servers: Vec<std::ops::Range<u32>>,
    /// Published idle counts: entry `[shard * n_servers + server]`, written only by `shard`.
    pub published: Vec<AtomicUsize>,
    pub n_shards: usize,
    pub stop: AtomicBool,
}

impl Shared {
    fn new(config: Config, n_shards: usize) -> Shared {
        let mut servers = Vec::new();
        let mut backend_servers = Vec::new();
        for (b, be) in config.backends.iter().enumerate() {
            let start = servers.len() as u32;
            for addr in &be.servers {
                servers.push(ServerInfo {
                    addr: *addr,
                    backend: b,
                });
            }
            backend_servers.push(start..servers.len() as u32);
        }
        let published = (0..n_shards * servers.len())
            .map(|_| AtomicUsize::new(0))
            .collect();
        Shared {
            router: Router::new(&config),
            config,
            servers,
            backend_servers,
            published,
            n_shards,
            stop: AtomicBool::new(false),
        }
    }

    /// Labels (backend name, address) of each server, in id order.
    pub fn server_labels(&self) -> Vec<(String, String)> {
        self.servers
            .iter()
            .map(|s| {
                (
                    self.config.backends[s.backend].name.clone(),
                    s.addr.to_string(),
                )
            })
            .collect()
    }

    /// The published idle counts of every shard for one server.
    pub fn published_row(&self, server: ServerId, out: &mut Vec<usize>) {
        out.clear();
        let n = self.servers.len();
        for shard in 0..self.n_shards {
            let v = self
                .published
                .get(shard * n + server.index())
                .map_or(0, |a| a.load(Ordering::Relaxed));
            out.push(v);
        }
    }
}

/// A request parked on a takeover ticket waits for one of these.
pub enum TakeoverOutcome {
    /// The owner granted a connection; it is attached to this shard already.
    Granted(crate::backend::BackendConn),
    /// Try this next (another owner, or connect anew).
    Next(ringway_pool::Next),
}

/// An admin request gathering snapshots: shards expected, snapshots so far, where to send them.
pub type StatsWaiter = (usize, Vec<Snapshot>, Option<oneshot::Sender<Vec<Snapshot>>>);

/// Everything one shard owns.
pub struct Shard {
    pub id: usize,
    pub cpu: Option<usize>,
    pub shared: Arc<Shared>,
    pub pool: RefCell<IdlePool<IdleConn>>,
    pub metrics: RefCell<ShardMetrics>,
    pub rr: Vec<RoundRobin>,
    /// When each server was marked down on this shard (None = up).
    pub down_since: Vec<Cell<Option<Instant>>>,
    pub client_conns: Cell<u64>,
    pub inflight: Cell<u64>,
    /// HTTP/2 client connections that have not yet closed after a drain's GOAWAY (the
    /// drain waits for these too, so every HTTP/2 client hears the GOAWAY).
    pub h2_conns: Cell<u64>,
    /// Backend connections this shard holds (in use or idle), for --max-conns-per-shard.
    pub backend_conns: Cell<usize>,
    pub draining: Cell<bool>,
    pub faults: RefCell<Option<FaultPlan>>,
    pub taker: RefCell<Taker>,
    pub owner: RefCell<Owner>,
    pub waiters: RefCell<HashMap<ringway_pool::Ticket, oneshot::Sender<TakeoverOutcome>>>,
    pub senders: Option<Senders<ShardMsg>>,
    /// Admin requests waiting for snapshots from other shards.
    pub stats_waiters: RefCell<HashMap<u64, StatsWaiter>>,
    pub stats_seq: Cell<u64>,
    pub published_scratch: RefCell<Vec<usize>>,
    /// Last resource warning logged and how many were suppressed since (see `warn_rate_limited`).
    pub warn_state: Cell<(Option<Instant>, u64)>,
}

impl Shard {
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Whether an injected fault fires at `point` (always false without `--fault`).
    pub fn fault(&self, point: FaultPoint) -> bool {
        match self.faults.borrow_mut().as_mut() {
            Some(f) => f.should_fail(point),
            None => false,
        }
    }

    /// Writes this shard's idle count for `server` where the other shards can read it.
    pub fn publish_idle(&self, server: ServerId) {
        let n = self.shared.servers.len();
        let count = self.pool.borrow().idle_count(server);
        if let Some(a) = self.shared.published.get(self.id * n + server.index()) {
            a.store(count, Ordering::Relaxed);
        }
    }

    /// This shard's figures, for `/metrics`.
    pub fn snapshot(&self) -> Snapshot {
        let m = self.metrics.borrow();
        let pool = self.pool.borrow();
        let servers = (0..pool.n_servers())
            .map(|i| pool.stats(ServerId(i as u32)).clone())
            .collect();
        let mut t = m.t.clone();
        let ts = self.taker.borrow().stats().clone();
        t.asked = ts.asked;
        t.granted = ts.granted;
        t.denied = ts.denied;
        t.timeout = ts.timeout;
        t.reservation_failed = ts.reservation_failed;
        t.channel_full = ts.channel_full;
        t.late_grant_adopted = ts.late_grant_adopted;
        t.failed = ts.reservation_failed + ts.channel_full;
        t.pending = self.taker.borrow().pending() as u64;
        let os = self.owner.borrow().stats().clone();
        t.handed_over = os.granted;
        t.owner_denied = os.denied;
        let faults = match self.faults.borrow().as_ref() {
            Some(f) => FaultPoint::ALL
                .iter()
                .map(|p| (p.name().to_string(), f.injected(*p)))
                .collect(),
            None => Vec::new(),
        };
        Snapshot {
            shard: self.id,
            cpu: self.cpu,
            c: m.c.clone(),
            t,
            latency: m.latency.clone(),
            servers,
            client_conns: self.client_conns.get(),
            inflight: self.inflight.get(),
            faults,
        }
    }
}

/// A running proxy: its shards' threads and the addresses they serve.
pub struct Proxy {
    pub listen: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("RLIMIT_MEMLOCK is {have} KiB; ringway's io_uring rings need at least {need} KiB of locked memory per process. Raise it with `ulimit -l {need}` (or more) in this shell, `LimitMEMLOCK=infinity` in the systemd unit, or `memlock` in /etc/security/limits.conf")]
    MemLock { have: u64, need: u64 },
    #[error("{0}")]
    Bind(std::io::Error),
    #[error("cannot start shard {shard} on {placement}: {err}")]
    Executor {
        shard: usize,
        placement: String,
        err: String,
    },
}

/// glommio refuses to build an executor below this much locked memory.
const MEMLOCK_NEEDED_KIB: u64 = 512;

/// Reads RLIMIT_MEMLOCK (soft limit, KiB) from /proc, without unsafe.
fn memlock_kib() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse::<u64>().ok().map(|b| b / 1024)
}

pub fn check_memlock() -> Result<(), StartError> {
    match memlock_kib() {
        Some(have) if have < MEMLOCK_NEEDED_KIB => Err(StartError::MemLock {
            have,
            need: MEMLOCK_NEEDED_KIB,
        }),
        _ => Ok(()),
    }
}

impl Proxy {
    /// Starts every shard; returns once all of them serve their listeners.
    pub fn start(config: Config) -> Result<Proxy, StartError> {
        check_memlock()?;
        let placement = config.placement.clone();
        let n = placement.shards();
        // Bind everything first: errors surface here, and port 0 resolves once, on the
        // first shard that accepts on that address; the others bind the same port.
        let mut per_shard: Vec<Vec<std::net::TcpListener>> = (0..n).map(|_| Vec::new()).collect();
        let mut listen = Vec::with_capacity(config.listen.len());
        for (j, requested) in config.listen.iter().enumerate() {
            let shards: Vec<usize> = match config.listen_shards.get(j) {
                Some(Some(v)) => v.clone(),
                _ => (0..n).collect(),
            };
            let mut addr = *requested;
            for (k, &s) in shards.iter().enumerate() {
                let l = crate::listener::bind_reuseport(addr).map_err(|e| {
                    StartError::Bind(std::io::Error::new(
                        e.kind(),
                        format!("cannot listen on {addr}: {e}"),
                    ))
                })?;
                if k == 0 {
                    addr = l.local_addr().map_err(StartError::Bind)?;
                }
                if let Some(v) = per_shard.get_mut(s) {
                    v.push(l);
                }
            }
            listen.push(addr);
        }
        let (admin_addr, admin_listener) = match config.admin {
            Some(a) => {
                let l = std::net::TcpListener::bind(a).map_err(|e| {
                    StartError::Bind(std::io::Error::new(
                        e.kind(),
                        format!("cannot listen on --admin {a}: {e}"),
                    ))
                })?;
                l.set_nonblocking(true).map_err(StartError::Bind)?;
                (Some(l.local_addr().map_err(StartError::Bind)?), Some(l))
            }
            None => (None, None),
        };
        let mut admin_listener = admin_listener;

        let shared = Arc::new(Shared::new(config, n));
        let mesh = MeshBuilder::<ShardMsg, _>::full(n, MESH_CAPACITY);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, String>>();
        let mut handles = Vec::with_capacity(n);
        for (i, listeners) in per_shard.into_iter().enumerate() {
            let (gp, cpu, desc) = match &placement {
                Placement::Pinned(cpus) => (
                    GPlacement::Fixed(cpus[i]),
                    Some(cpus[i]),
                    format!("CPU {}", cpus[i]),
                ),
                Placement::Unpinned(_) => (GPlacement::Unbound, None, "any CPU".to_string()),
            };
            let mut b = LocalExecutorBuilder::new(gp)
                .name(&format!("ringway-{i}"))
                .io_memory(64 << 10)
                .ring_depth(1024)
                .preempt_timer(Duration::from_millis(50));
            if let Some(spin) = shared.config.spin_before_park {
                b = b.spin_before_park(spin);
            }
            let shared2 = shared.clone();
            let mesh2 = mesh.clone();
            let ready = ready_tx.clone();
            let admin = if i == 0 { admin_listener.take() } else { None };
            let h = b
                .spawn(move || async move {
                    run_shard(i, cpu, shared2, listeners, admin, mesh2, n, ready).await
                })
                .map_err(|e| StartError::Executor {
                    shard: i,
                    placement: desc.clone(),
                    err: e.to_string(),
                })?;
            handles.push(h);
        }
        drop(ready_tx);
        // Wait until every shard is up (or one failed to start).
        let mut up = 0;
        while up < n {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(_)) => up += 1,
                Ok(Err(e)) => {
                    shared.stop.store(true, Ordering::SeqCst);
                    return Err(StartError::Executor {
                        shard: up,
                        placement: String::new(),
                        err: e,
                    });
                }
                Err(_) => {
                    shared.stop.store(true, Ordering::SeqCst);
                    // An executor that failed to build reports it on join.
                    let mut errs = Vec::new();
                    for (i, h) in handles.into_iter().enumerate() {
                        if let Err(e) = h.join() {
                            errs.push(format!("shard {i}: {e}"));
                        }
                    }
                    return Err(StartError::Executor {
                        shard: up,
                        placement: String::new(),
                        err: if errs.is_empty() {
                            "shards did not start in time".into()
                        } else {
                            errs.join("; ")
                        },
                    });
                }
            }
        }
        Ok(Proxy {
            listen,
            admin: admin_addr,
            shared,
            handles,
        })
    }

    /// Asks every shard to stop: stop accepting, finish in-flight requests within the grace period.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// Waits until every shard has exited.
    pub fn join(self) -> Result<(), String> {
        let mut errs = Vec::new();
        for (i, h) in self.handles.into_iter().enumerate() {
            if let Err(e) = h.join() {
                errs.push(format!("shard {i}: {e}"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_shard(
    id: usize,
    cpu: Option<usize>,
    shared: Arc<Shared>,
    listeners: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    mesh: MeshBuilder<ShardMsg, glommio::channels::channel_mesh::Full>,
    n: usize,
    ready: mpsc::Sender<Result<usize, String>>,
) {
    let cfg = &shared.config;
    let (senders, receivers) = if n > 1 {
        match mesh.join().await {
            Ok((s, r)) => (Some(s), Some(r)),
            Err(_) => {
                let _ = ready.send(Err(format!("shard {id} could not join the shard mesh")));
                return;
            }
        }
    } else {
        drop(mesh);
        (None, None)
    };
    // The mesh numbers peers in join order; use that number as the shard id so messages
    // and published counts agree.
    let id = senders.as_ref().map_or(id, |s| s.peer_id());
    let pool_cfg = PoolConfig {
        reuse: cfg.reuse,
        max_idle_per_server: cfg.pool_max_idle,
        max_reuse: cfg.max_reuse,
        low_idle: cfg.pool_low_idle,
    };
    let n_servers = shared.servers.len();
    let shard = Rc::new(Shard {
        id,
        cpu,
        pool: RefCell::new(IdlePool::new(pool_cfg, n_servers)),
        metrics: RefCell::new(ShardMetrics::default()),
        rr: (0..cfg.backends.len())
            .map(|_| RoundRobin::default())
            .collect(),
        down_since: (0..n_servers).map(|_| Cell::new(None)).collect(),
        client_conns: Cell::new(0),
        inflight: Cell::new(0),
        h2_conns: Cell::new(0),
        backend_conns: Cell::new(0),
        draining: Cell::new(false),
        faults: RefCell::new(cfg.fault.as_ref().map(|f| f.for_shard(id))),
        taker: RefCell::new(Taker::new(
            id,
            n,
            TakerConfig {
                low_idle: cfg.pool_low_idle,
                ask_timeout: cfg.takeover_timeout,
            },
        )),
        owner: RefCell::new(Owner::new()),
        waiters: RefCell::new(HashMap::new()),
        senders,
        stats_waiters: RefCell::new(HashMap::new()),
        stats_seq: Cell::new(0),
        published_scratch: RefCell::new(Vec::with_capacity(n)),
        warn_state: Cell::new((None, 0)),
        shared: shared.clone(),
    });

    if let Some(mut r) = receivers {
        for (peer, rx) in r.streams() {
            let s = shard.clone();
            glommio::spawn_local(mesh::receive_loop(s, peer, rx)).detach();
        }
    }
    glommio::spawn_local(crate::backend::purge_loop(shard.clone())).detach();
    glommio::spawn_local(crate::backend::sweep_loop(shard.clone())).detach();

    let mut accept_tasks = Vec::new();
    for l in listeners {
        let l = crate::listener::into_glommio(l);
        accept_tasks.push(glommio::spawn_local(crate::proxy::accept_loop(
            shard.clone(),
            l,
        )));
    }
    let admin_task = admin.map(|l| {
        glommio::spawn_local(crate::admin::serve(
            shard.clone(),
            crate::listener::into_glommio(l),
        ))
    });
    let _ = ready.send(Ok(id));
    drop(ready);

    while !shared.stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    // Drain: stop accepting, let in-flight requests finish within the grace period.
    shard.draining.set(true);
    for t in accept_tasks {
        drop(t);
    }
    let deadline = Instant::now() + shard.config().grace;
    while (shard.inflight.get() > 0 || shard.h2_conns.get() > 0) && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(admin_task);
    crate::backend::close_all_idle(&shard);
    if let Some(s) = &shard.senders {
        s.close();
    }
    tracing::debug!(shard = id, "shard stopped");
}
