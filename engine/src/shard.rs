//! One shard: the only place that composes a shard's sub-contexts and starts its
//! long-lived tasks.
//!
//! [`run`] joins the shard mesh, builds the upstream layer (with an outbox onto the
//! mesh), the [`ShardCtx`] the request paths see, and the [`Shard`] around it; starts
//! the mesh receivers, the idle sweep and purge, the accept loops and (on one shard)
//! the admin listener; then waits for the stop flag and drains. Everything a shard says
//! to another is a [`ShardMsg`]: upstream messages (takeover, server state) and the
//! metrics gathering for `/metrics`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder};

use crate::ctx::{Load, ShardCtx, Shared};
use crate::mesh::Mesh;
use crate::metrics::{Labels, ShardMetrics, Snapshot};
use crate::oneshot;
use crate::upstream::{UpstreamMsg, Upstreams};
use crate::warn::RateLimited;

/// Bound of each shard-to-shard channel. A full channel is a miss, never a wait.
pub const MESH_CAPACITY: usize = 1024;
/// How often a shard looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// How long `/metrics` waits for the other shards' snapshots.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything one shard can say to another.
pub enum ShardMsg {
    Upstream(UpstreamMsg),
    StatsRequest { from: usize, id: u64 },
    StatsReply { id: u64, snap: Box<Snapshot> },
}

/// An admin request gathering snapshots: shards expected, snapshots so far, where to send them.
type StatsWaiter = (usize, Vec<Snapshot>, Option<oneshot::Sender<Vec<Snapshot>>>);

/// One shard: the context its request paths share, and its link to the other shards.
pub struct Shard {
    pub cpu: Option<usize>,
    pub ctx: Rc<ShardCtx>,
    mesh: Rc<Mesh<ShardMsg>>,
    stats_waiters: RefCell<HashMap<u64, StatsWaiter>>,
    stats_seq: Cell<u64>,
}

impl Shard {
    /// This shard's figures, for `/metrics`.
    pub fn snapshot(&self) -> Snapshot {
        let ctx = &self.ctx;
        let m = ctx.metrics.borrow();
        let (servers, up_counters, t) = ctx.upstreams.snapshot();
        let table = ctx.upstreams.table();
        let servers_up = ctx.upstreams.servers_up();
        // Per slot: whether its server is up on this shard.
        let up: Vec<bool> = (0..table.keys.len())
            .map(|i| {
                table
                    .keys
                    .key(ringway_pool::ServerId(i as u32))
                    .and_then(|k| servers_up.get(k.server as usize).copied())
                    .unwrap_or(true)
            })
            .collect();
        let mut c = m.c.clone();
        c.backend_connect_errors = up_counters.backend_connect_errors;
        c.idle_closed_by_server = up_counters.idle_closed_by_server;
        c.server_down_events = up_counters.server_down_events;
        c.local_exhaustion = up_counters.local_exhaustion;
        let ring = glommio::recv_buffer_ring_stats();
        c.io_buffer_ring_exhausted = ring.map_or(0, |r| r.exhausted);
        c.io_multishot_armed = ring.map_or(0, |r| r.armed);
        c.io_single_recv_armed = ring.map_or(0, |r| r.single);
        let spliced = crate::splice::stats();
        c.body_spliced = spliced.bodies;
        c.body_spliced_bytes = spliced.bytes;
        c.splice_pipes_opened = spliced.pipes_opened;
        c.body_ring_sent_bytes = spliced.ring_sent_bytes;
        c.splice_pipes_pooled = crate::splice::pooled_pipes() as u64;
        c.backend_desync += up_counters.backend_desync;
        Snapshot {
            shard: ctx.id,
            cpu: self.cpu,
            c,
            t,
            request: m.request.clone(),
            servers,
            figures: m.servers.clone(),
            up,
            client_conns: ctx.load.client_conns.get(),
            inflight: ctx.load.inflight.get(),
            draining: ctx.load.draining.get(),
            faults: ctx.upstreams.faults_injected(),
            checks: ctx.upstreams.checks.figures(),
            no_server: ctx.upstreams.no_server_by_backend(),
        }
    }

    fn on_message(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Upstream(m) => self.ctx.upstreams.on_message(m),
            ShardMsg::StatsRequest { from, id } => {
                let snap = Box::new(self.snapshot());
                let _ = self.mesh.try_send(from, ShardMsg::StatsReply { id, snap });
            }
            ShardMsg::StatsReply { id, snap } => self.on_stats_reply(id, *snap),
        }
    }

    fn on_stats_reply(&self, id: u64, snap: Snapshot) {
        let mut waiters = self.stats_waiters.borrow_mut();
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

    /// Gathers a snapshot from every shard through the mesh (this one's included).
    /// Shards that do not answer within [`GATHER_TIMEOUT`] are left out.
    async fn gather(&self) -> Vec<Snapshot> {
        let mut own = vec![self.snapshot()];
        let id = self.stats_seq.get() + 1;
        self.stats_seq.set(id);
        let (tx, rx) = oneshot::channel();
        let from = self.ctx.id;
        let asked = self
            .mesh
            .peers()
            .filter(|&p| {
                self.mesh
                    .try_send(p, ShardMsg::StatsRequest { from, id })
                    .is_ok()
            })
            .count();
        if asked == 0 {
            return own;
        }
        self.stats_waiters
            .borrow_mut()
            .insert(id, (asked, Vec::new(), Some(tx)));
        let got = futures_lite::future::or(async { rx.await.unwrap_or_default() }, async {
            glommio::timer::sleep(GATHER_TIMEOUT).await;
            Vec::new()
        })
        .await;
        let got = if got.is_empty() {
            // Timed out: take whatever arrived.
            self.stats_waiters
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
}

impl crate::admin::Source for Shard {
    async fn metrics(&self) -> String {
        let mut snaps = self.gather().await;
        let shared = &self.ctx.shared;
        let table = self.ctx.upstreams.table();
        let slots = table.slot_labels();
        let backends: Vec<String> = self
            .ctx
            .config()
            .backends
            .iter()
            .map(|b| b.name.clone())
            .collect();
        let mut text = crate::metrics::render(
            &mut snaps,
            &Labels {
                slots: &slots,
                backends: &backends,
                open_fds: crate::fd::open_fds(),
                version: env!("CARGO_PKG_VERSION"),
                commit: crate::build_info::COMMIT,
            },
        );
        {
            use std::fmt::Write as _;
            let _ = write!(
                text,
                "# HELP ringway_config_reloads_total Configuration reloads (SIGHUP) that took effect.\n\
                 # TYPE ringway_config_reloads_total counter\nringway_config_reloads_total {}\n\
                 # HELP ringway_config_reload_failures_total Configuration reloads refused (the file was invalid); the old configuration stays.\n\
                 # TYPE ringway_config_reload_failures_total counter\nringway_config_reload_failures_total {}\n",
                shared.reloads.load(Ordering::Relaxed),
                shared.reload_failures.load(Ordering::Relaxed)
            );
            let _ = write!(
                text,
                "# HELP ringway_backend_no_server_total Requests answered 503 because no server of the backend was usable (all down by their check, taken out, drained or removed).\n\
                 # TYPE ringway_backend_no_server_total counter\n"
            );
            for s in snaps.iter() {
                let shard = match s.cpu {
                    Some(cpu) => format!("shard=\"{}\",cpu=\"{cpu}\"", s.shard),
                    None => format!("shard=\"{}\"", s.shard),
                };
                for (backend, n) in &s.no_server {
                    let _ = writeln!(
                        text,
                        "ringway_backend_no_server_total{{{shard},backend=\"{backend}\"}} {n}"
                    );
                }
            }
            text.push_str(&crate::metrics::render_dns(&shared.dns_names.load()));
            let checks: Vec<_> = snaps
                .iter()
                .flat_map(|s| s.checks.iter().copied())
                .collect();
            if !checks.is_empty() {
                let label = |server: u32| {
                    table
                        .servers
                        .get(server as usize)
                        .map_or_else(String::new, |s| {
                            format!("backend=\"{}\",server=\"{}\"", s.backend_name, s.addr)
                        })
                };
                let families: [(&str, &str, &str); 4] = [
                    ("server_check_up", "gauge", "1 while the server passes its active health check (HAProxy's rise/fall), 0 while it is down by it."),
                    ("server_check_last_change_seconds", "gauge", "When the server's health-check state last changed (start-up counts), in seconds since the epoch."),
                    ("server_checks_failed_total", "counter", "Active health checks of the server that failed."),
                    ("server_checks_total", "counter", "Active health checks of the server sent (one shard checks each server)."),
                ];
                for (k, (name, kind, help)) in families.iter().enumerate() {
                    let _ = write!(
                        text,
                        "# HELP ringway_{name} {help}\n# TYPE ringway_{name} {kind}\n"
                    );
                    for &(server, up, changed, failed, sent) in &checks {
                        let v = match k {
                            0 => u64::from(up).to_string(),
                            1 => format!("{changed:.3}"),
                            2 => failed.to_string(),
                            _ => sent.to_string(),
                        };
                        let _ = writeln!(text, "ringway_{name}{{{}}} {v}", label(server));
                    }
                }
            }
        }
        if let Some(tls) = &shared.server_tls {
            use std::fmt::Write as _;
            let ok = tls.reloads.load(Ordering::Relaxed);
            let failed = tls.reload_failures.load(Ordering::Relaxed);
            let _ = write!(
                text,
                "# HELP ringway_tls_reloads_total Certificate reloads (SIGHUP) that took effect.\n\
                 # TYPE ringway_tls_reloads_total counter\nringway_tls_reloads_total {ok}\n\
                 # HELP ringway_tls_reload_failures_total Certificate reloads refused (a file did not load); the old certificates stay.\n\
                 # TYPE ringway_tls_reload_failures_total counter\nringway_tls_reload_failures_total {failed}\n"
            );
        }
        text
    }

    fn ready(&self) -> bool {
        !self.ctx.load.draining.get() && !self.ctx.shared.stop.load(Ordering::Relaxed)
    }
}

/// Runs shard `id` of `n` until the stop flag is set and the drain is over.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    id: usize,
    cpu: Option<usize>,
    shared: Arc<Shared>,
    listeners: Vec<(std::net::TcpListener, bool)>,
    admin: Option<std::net::TcpListener>,
    mesh: MeshBuilder<ShardMsg, Full>,
    n: usize,
    ready: mpsc::Sender<Result<usize, String>>,
) {
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
    let mesh = Rc::new(Mesh::new(id, n, senders));
    let outbox = {
        let mesh = mesh.clone();
        Box::new(move |to: usize, m: UpstreamMsg| {
            mesh.try_send(to, ShardMsg::Upstream(m))
                .map_err(|back| match back {
                    Some(ShardMsg::Upstream(m)) => Some(m),
                    _ => None,
                })
        })
    };
    let load = Load::default();
    let upstreams = Rc::new(Upstreams::new(
        id,
        n,
        &shared.config,
        shared.table.clone(),
        outbox,
        crate::upstream::FdBudget {
            per_shard: shared.fd_budget.clone(),
            clients: load.client_conns.clone(),
        },
    ));
    let ctx = Rc::new(ShardCtx {
        id,
        shared: shared.clone(),
        upstreams: upstreams.clone(),
        metrics: RefCell::new(ShardMetrics::new(
            shared.config.backends.len(),
            shared.table.keys.len(),
        )),
        load,
        warn: RateLimited::default(),
        backend_warn: RateLimited::default(),
        access_log: shared.access_log.shard_log(id),
        live: RefCell::new(Rc::new(crate::ctx::Live::new(shared.config.clone()))),
        generation: Cell::new(0),
    });
    // A reload published while this shard was starting.
    ctx.pick_up_reload();
    let shard = Rc::new(Shard {
        cpu,
        ctx: ctx.clone(),
        mesh: mesh.clone(),
        stats_waiters: RefCell::new(HashMap::new()),
        stats_seq: Cell::new(0),
    });

    if let Some(mut r) = receivers {
        for (peer, rx) in r.streams() {
            let s = shard.clone();
            glommio::spawn_local(async move {
                crate::mesh::receive(rx, |m| s.on_message(m)).await;
                tracing::debug!(shard = s.ctx.id, peer, "mesh link closed");
            })
            .detach();
        }
    }
    let maintenance = [
        glommio::spawn_local(upstreams.clone().sweep_loop()),
        glommio::spawn_local(upstreams.clone().purge_loop()),
        glommio::spawn_local(upstreams.clone().check_loop()),
    ];
    let log_flush = ctx.access_log.enabled().then(|| {
        let ctx = ctx.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(crate::access_log::FLUSH_EVERY).await;
                crate::report::flush_access_log(&ctx);
            }
        })
    });
    // Each shard has its own TLS session cache; certificates and ticket keys are shared.
    let tls = match &shared.server_tls {
        Some(t) => match t.shard_config() {
            Ok(c) => Some(c),
            Err(e) => {
                let _ = ready.send(Err(format!("shard {id}: TLS configuration: {e}")));
                return;
            }
        },
        None => None,
    };
    let accept_tasks: Vec<_> = listeners
        .into_iter()
        .map(|(l, is_tls)| {
            let l = crate::fd::listener_into_glommio(l);
            let tls = if is_tls { tls.clone() } else { None };
            glommio::spawn_local(crate::front::accept_loop(ctx.clone(), l, tls))
        })
        .collect();
    let admin_task = admin.map(|l| {
        glommio::spawn_local(crate::admin::serve(
            shard.clone(),
            crate::fd::listener_into_glommio(l),
        ))
    });
    let _ = ready.send(Ok(id));
    drop(ready);

    while !shared.stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(STOP_POLL).await;
        if ctx.pick_up_reload() {
            tracing::debug!(shard = id, "configuration reload applied");
        }
    }
    // Drain: stop accepting, let in-flight requests finish within the grace period.
    ctx.load.draining.set(true);
    drop(accept_tasks);
    drop(maintenance);
    let deadline = glommio::clock::now() + ctx.config().grace;
    while (ctx.load.inflight.get() > 0 || ctx.load.h2_conns.get() > 0)
        && glommio::clock::now() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(admin_task);
    drop(log_flush);
    crate::report::flush_access_log(&ctx);
    upstreams.close_all_idle();
    mesh.close();
    tracing::debug!(shard = id, "shard stopped");
}
