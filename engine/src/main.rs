//! The `ringway` command: parse flags, then run the proxy, check the configuration, run
//! the demo, or generate the man page and completions. Exit status: 0 after a clean
//! stop, 2 for a bad flag or configuration (or `demo` in a build without it), 1 when the
//! proxy could not start or failed. Nothing printed to stdout panics when stdout is
//! closed (`ringway check-config | head -1`).

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ringway::config::values::TextOrJson;
use ringway::config::{Cli, Command, Config};
use ringway::Proxy;

/// Keeps glibc's allocator from handing the top of a shard's heap back to the kernel and
/// faulting it in again on every few requests. Shards run on their own threads, so their
/// allocations come from glibc's per-thread arenas, which shrink (`madvise`) whenever the
/// free space at their top passes the trim threshold and grow again on the next burst: with
/// 16 KiB responses that was 1.4 page faults per proxied request and about a quarter of the
/// CPU per request (docs/benchmarks.md, "Findings of 2026-12-01, evening"). A top pad of
/// 1 MiB per arena keeps that much slack resident instead; the cost is at most 1 MiB per
/// arena, not per connection. Other C libraries: nothing to do.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of glibc's allocator; it runs before any other
    // thread exists, and a refused value (0 returned) leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version with status 0 and usage errors with status 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    match &cli.command {
        Some(Command::Demo(args)) => {
            init_logs("warn", TextOrJson::Text);
            return match ringway::demo::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringway demo: {e}");
                    ExitCode::from(e.exit_code())
                }
            };
        }
        Some(Command::Generate { what }) => return generate(what),
        _ => {}
    }
    // Servers given by DNS name are resolved now, before anything starts: one that does
    // not resolve is a configuration error (dns.rs says why).
    let config = match Config::from_opts(&cli.opts()).and_then(|mut c| {
        ringway::dns::resolve_missing(&mut c)?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringway: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig(_)) = &cli.command {
        // A closed stdout (`| head -1`) is not an error worth a panic.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "configuration OK");
        let _ = write!(out, "{}", ringway::config::describe(&config));
        let _ = out.flush();
        return ExitCode::SUCCESS;
    }
    init_logs(&config.log, config.log_format);
    run(config, cli.opts())
}

/// `ringway generate man|SHELL`: the man page (roff) or a completion script, on stdout.
fn generate(what: &str) -> ExitCode {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    if what == "config-reference" {
        out = ringway::config::reference::markdown().into_bytes();
    } else if what == "man" {
        if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
            eprintln!("ringway generate: {e}");
            return ExitCode::FAILURE;
        }
    } else {
        let Ok(shell) = what.parse::<clap_complete::Shell>() else {
            eprintln!(
                "ringway generate: '{what}' is neither man nor a shell (bash, zsh, fish, elvish, powershell)"
            );
            return ExitCode::from(2);
        };
        clap_complete::generate(shell, &mut cmd, "ringway", &mut out);
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
    ExitCode::SUCCESS
}

/// Changes the log filter of the running process (a reload's `log`); unset before
/// `init_logs`, and when `RINGWAY_LOG` overrides the filter.
type SetFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
static SET_LOG_FILTER: std::sync::OnceLock<SetFilter> = std::sync::OnceLock::new();

fn init_logs(filter: &str, format: TextOrJson) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let from_env = tracing_subscriber::EnvFilter::try_from_env("RINGWAY_LOG").ok();
    let env_set = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(filter));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let done = match format {
        TextOrJson::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        TextOrJson::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if done.is_ok() && !env_set {
        let _ = SET_LOG_FILTER.set(Box::new(move |f: &str| {
            let filter = tracing_subscriber::EnvFilter::try_new(f).map_err(|e| e.to_string())?;
            handle.reload(filter).map_err(|e| e.to_string())
        }));
    }
}

/// Prints a machine-readable line on stdout (tests and scripts read the ports from
/// here); a closed stdout is ignored.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn run(config: Config, opts: ringway::config::Opts) -> ExitCode {
    if !config.reuse_port_shared {
        if let Some((addr, e)) = ringway::preflight::address_in_use(&config.listen) {
            eprintln!(
                "ringway: cannot start: another process already listens on {addr} ({e}); with \
                 SO_REUSEPORT both would share its connections. Stop it, choose another --listen, \
                 or pass --reuse-port-shared if sharing is intended"
            );
            return ExitCode::FAILURE;
        }
    }
    if let Some(warning) = ringway::preflight::check_fd_limit(&config) {
        tracing::warn!("{warning}");
    }
    let summary = ringway::config::describe(&config);
    let proxy = match Proxy::start(config) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("ringway: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Signal handlers first: a script that signals as soon as it reads the `listening on`
    // lines must not meet the default actions (SIGHUP and SIGUSR1 would kill).
    // SIGINT/SIGTERM: the shards stop accepting and drain within --grace.
    // SIGUSR1: the access log reopens its file (logrotate).
    // SIGHUP: re-read the TLS certificates and keys (open connections keep theirs).
    let shared = proxy.shared.clone();
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGUSR1,
        signal_hook::consts::SIGHUP,
    ]);
    match signals {
        Ok(mut signals) => {
            std::thread::Builder::new()
                .name("ringway-signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        if sig == signal_hook::consts::SIGUSR1 {
                            shared.access_log.reopen();
                            continue;
                        }
                        if sig == signal_hook::consts::SIGHUP {
                            reload(&shared, &opts);
                            continue;
                        }
                        tracing::info!(signal = sig, "stopping: draining in-flight requests");
                        shared.stop.store(true, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                })
                .ok();
        }
        Err(e) => tracing::warn!(error = %e, "cannot install signal handlers"),
    }
    // Re-resolution of servers given by DNS name, off the shards. Started before the
    // listeners are announced: its runtime's fds exist by then, so the process is
    // complete when it says it listens (a count of open fds taken then, as the takeover
    // soak takes its baseline, is the idle one; started after, its three fds came a
    // moment later and, on a busy machine, after such a count).
    // The access log's file too (the writer thread starts after the announcement, so
    // that the `listening on` lines come first on stdout).
    if let Err(e) = proxy.shared.access_log.open() {
        eprintln!("ringway: cannot start: {e}");
        proxy.stop();
        let _ = proxy.join();
        return ExitCode::FAILURE;
    }
    if let Err(e) = ringway::dns::spawn(proxy.shared.clone()) {
        tracing::error!(error = %e, "cannot start the DNS resolver thread; DNS names keep their start-up addresses");
    }
    let listen: Vec<String> = proxy.listen.iter().map(|a| a.to_string()).collect();
    // Machine-readable lines first on stdout; the access log follows them.
    for a in &listen {
        say(&format!("listening on {a}"));
    }
    for a in &proxy.listen_tls {
        say(&format!("listening tls on {a}"));
    }
    if let Some(a) = proxy.admin {
        say(&format!("admin on {a}"));
    }
    let access_log = match proxy.shared.access_log.start_writer() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("ringway: cannot start: {e}");
            proxy.stop();
            let _ = proxy.join();
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        listen = %listen.join(", "),
        admin = %proxy.admin.map_or("off".to_string(), |a| a.to_string()),
        commit = ringway::build_info::COMMIT,
        "ringway {} started",
        env!("CARGO_PKG_VERSION")
    );
    for line in summary.lines() {
        tracing::info!("{line}");
    }
    let shared = proxy.shared.clone();
    let joined = proxy.join();
    // The shards flushed their last lines; let the writer write them and end.
    shared.access_log.close();
    if let Some(w) = access_log {
        if !w.join(std::time::Duration::from_secs(2)) {
            tracing::warn!("the access log writer is stuck; its last lines are lost");
        }
    }
    match joined {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP: what can change without a restart is re-read; a failure keeps what runs.
///
/// The TLS certificates and keys are re-read; then the `--config` file is read and
/// validated exactly as at start-up (and as `ringway check-config` does). An invalid file
/// is refused as a whole: the error is logged, counted in
/// `ringway_config_reload_failures_total`, and the old configuration keeps serving. A
/// valid one is published to the shards (see `ctx::Shared::reload`): backends and their
/// servers, routes, timeouts, per-backend pool limits, balancing and checks, and the log
/// filter change without dropping a connection; settings that only a restart can change
/// (listeners, CPUs, ...) keep their running value and are logged as such.
fn reload(shared: &ringway::ctx::Shared, opts: &ringway::config::Opts) {
    use std::sync::atomic::Ordering;
    match &shared.server_tls {
        Some(tls) => match tls.reload() {
            Ok(()) => tracing::info!("reloaded the TLS certificates and keys"),
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the certificates in use")
            }
        },
        None => tracing::debug!("SIGHUP: no TLS certificates to reload"),
    }
    if opts.config.is_none() {
        tracing::info!("SIGHUP: no --config file to reload; the flags stay as they are");
        return;
    }
    let new = match Config::from_opts(opts) {
        Ok(c) => c,
        Err(e) => {
            shared.reload_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "configuration reload refused: {e}; the old configuration keeps serving");
            return;
        }
    };
    // One builder of the next configuration at a time (the resolver thread is the other).
    let Ok(_guard) = shared.update.lock() else {
        shared.reload_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!("configuration reload refused: internal state poisoned");
        return;
    };
    let (current, table) = match shared.reload.lock() {
        Ok(r) => (r.config.clone(), r.table.clone()),
        Err(_) => {
            shared.reload_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("configuration reload refused: internal state poisoned");
            return;
        }
    };
    // DNS names it keeps keep their current addresses; new ones must resolve.
    let mut new = new;
    if let Err(e) = ringway::dns::carry_over(&mut new, &current) {
        shared.reload_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "configuration reload refused: {e}; the old configuration keeps serving");
        return;
    }
    let (applied, restart) = ringway::config::reload::merge(&current, new);
    for what in &restart {
        tracing::warn!(
            "configuration reload: {what} changed, which needs a restart; the running value stays"
        );
    }
    if applied.log != current.log {
        match SET_LOG_FILTER.get() {
            Some(set) => match set(&applied.log) {
                Ok(()) => tracing::info!(filter = %applied.log, "log filter changed"),
                Err(e) => tracing::warn!(error = %e, "log filter not changed"),
            },
            None => tracing::warn!("log filter not changed: RINGWAY_LOG overrides it"),
        }
    }
    let changes = ringway::config::reload::describe_changes(&current, &applied);
    let new_table = table.rebuild(&applied);
    shared.publish_reload(applied, new_table);
    shared.reloads.fetch_add(1, Ordering::Relaxed);
    if changes.is_empty() {
        tracing::info!("configuration reloaded: nothing changed");
    } else {
        tracing::info!("configuration reloaded: {}", changes.join("; "));
    }
}
