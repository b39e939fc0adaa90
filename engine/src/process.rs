//! The process: binds every listener, starts one executor per shard (pinned or not),
//! waits until each has joined the shard mesh, and stops them.
//!
//! [`Proxy::start`] checks `RLIMIT_MEMLOCK`, binds every shard's `SO_REUSEPORT` listener
//! up front (so a bad address is an error before anything runs), starts the executors and
//! waits until each serves. Shards share only [`Shared`]: the configuration, the server
//! table with its published idle counts, and the stop flag. What each shard runs is
//! `shard::run`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement as GPlacement};

use crate::config::{Config, Placement};
use crate::ctx::Shared;
use crate::shard::{ShardMsg, MESH_CAPACITY};

/// A running proxy: its shards' threads and the addresses they serve.
/// File descriptors never given to client or backend connections (see [`Proxy::start`]).
pub const FD_RESERVE: u64 = 32;

pub struct Proxy {
    pub listen: Vec<SocketAddr>,
    /// The TLS listeners' addresses (`--listen-tls`).
    pub listen_tls: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    MemLock(#[from] ringway_sys::memlock::MemlockError),
    #[error("{0}")]
    Bind(std::io::Error),
    #[error("TLS: {0}")]
    Tls(crate::tls::TlsError),
    #[error("cannot start shard {shard} on {placement}: {err}")]
    Executor {
        shard: usize,
        placement: String,
        err: String,
    },
}

impl Proxy {
    /// Starts every shard; returns once all of them serve their listeners.
    pub fn start(config: Config) -> Result<Proxy, StartError> {
        ringway_sys::memlock::check()?;
        let placement = config.placement.clone();
        let n = placement.shards();
        // Bind everything first: errors surface here, and port 0 resolves once, on the
        // first shard that accepts on that address; the others bind the same port.
        let mut per_shard: Vec<Vec<(std::net::TcpListener, bool)>> =
            (0..n).map(|_| Vec::new()).collect();
        let mut listen = Vec::with_capacity(config.listen.len());
        let mut listen_tls = Vec::with_capacity(config.listen_tls.len());
        let groups = [
            (&config.listen, &config.listen_shards, false),
            (&config.listen_tls, &config.listen_tls_shards, true),
        ];
        for (addrs, shard_sets, tls) in groups {
            for (j, requested) in addrs.iter().enumerate() {
                let shards: Vec<usize> = match shard_sets.get(j) {
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
                        v.push((l, tls));
                    }
                }
                if tls {
                    listen_tls.push(addr);
                } else {
                    listen.push(addr);
                }
            }
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

        let server_tls = if config.listen_tls.is_empty() {
            None
        } else {
            Some(Arc::new(
                crate::tls::ServerTls::load(config.certs.clone()).map_err(StartError::Tls)?,
            ))
        };
        let any_https = config
            .backends
            .iter()
            .any(|b| b.schemes.iter().any(|s| s.tls_name().is_some()));
        let backend_tls = if any_https {
            Some(crate::tls::BackendTls::build(&config.backend_tls).map_err(StartError::Tls)?)
        } else {
            None
        };
        let shared = Arc::new(Shared::new(config, n, server_tls, backend_tls));
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
                .preempt_timer(Duration::from_millis(5));
            if let Some(spin) = shared.config.spin_before_park {
                b = b.spin_before_park(spin);
            }
            let shared2 = shared.clone();
            let mesh2 = mesh.clone();
            let ready = ready_tx.clone();
            let admin = if i == 0 { admin_listener.take() } else { None };
            let h = b
                .spawn(move || async move {
                    crate::shard::run(i, cpu, shared2, listeners, admin, mesh2, n, ready).await
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
                    // An executor that failed to build reports it on join; one that hangs
                    // would hang the join, so the joins run on a thread of their own and
                    // are given 5 s (then the error says only that shards did not start).
                    let (tx, rx) = mpsc::channel();
                    let joiner = std::thread::Builder::new()
                        .name("ringway-start-join".into())
                        .spawn(move || {
                            let mut errs = Vec::new();
                            for (i, h) in handles.into_iter().enumerate() {
                                if let Err(e) = h.join() {
                                    errs.push(format!("shard {i}: {e}"));
                                }
                            }
                            let _ = tx.send(errs);
                        });
                    let errs = match joiner {
                        Ok(_) => rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default(),
                        Err(_) => Vec::new(),
                    };
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
        // Every shard is up, so what the process holds for itself (listeners, rings,
        // eventfds, logs) is open: the rest, less a reserve, is split between the shards
        // for client and backend connections. The reserve keeps `/metrics`, log reopening
        // and certificate reloads working when connections have taken all the others.
        if let Some(soft) = crate::preflight::soft_fd_limit() {
            let held = crate::fd::open_fds() as u64 + FD_RESERVE;
            let per = soft.saturating_sub(held) / n as u64;
            shared
                .fd_budget
                .store(usize::try_from(per).unwrap_or(usize::MAX), Ordering::SeqCst);
            tracing::debug!(soft, held, per_shard = per, "file descriptor budget");
        }
        Ok(Proxy {
            listen,
            listen_tls,
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
