//! The `ringway` command: parse flags, then run the proxy, check the configuration, or
//! run the demo. Exit status: 0 after a clean stop, 2 for a bad flag or configuration (or
//! `demo` in a build without it), 1 when the proxy could not start or failed.

use std::process::ExitCode;

use clap::Parser;
use ringway::config::{Cli, Command, Config};
use ringway::Proxy;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version with status 0 and usage errors with status 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    if let Some(Command::Demo(args)) = &cli.command {
        init_logs("warn");
        return match ringway::demo::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringway demo: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    let config = match Config::from_opts(&cli.opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringway: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig) = &cli.command {
        println!("configuration OK");
        print!("{}", ringway::config::describe(&config));
        return ExitCode::SUCCESS;
    }
    init_logs(&config.log);
    run(config)
}

fn init_logs(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn run(config: Config) -> ExitCode {
    let summary = ringway::config::describe(&config);
    let proxy = match Proxy::start(config) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("ringway: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listen: Vec<String> = proxy.listen.iter().map(|a| a.to_string()).collect();
    // Machine-readable lines on stdout (tests and scripts read the real ports from here).
    for a in &listen {
        println!("listening on {a}");
    }
    for a in &proxy.listen_tls {
        println!("listening tls on {a}");
    }
    if let Some(a) = proxy.admin {
        println!("admin on {a}");
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    tracing::info!(
        listen = %listen.join(", "),
        admin = %proxy.admin.map_or("off".to_string(), |a| a.to_string()),
        "ringway {} started",
        env!("CARGO_PKG_VERSION")
    );
    for line in summary.lines() {
        tracing::info!("{line}");
    }
    // SIGINT/SIGTERM: the shards stop accepting and drain within --grace.
    // SIGHUP: re-read the TLS certificates and keys (open connections keep theirs).
    let shared = proxy.shared.clone();
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]);
    match signals {
        Ok(mut signals) => {
            std::thread::Builder::new()
                .name("ringway-signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        if sig == signal_hook::consts::SIGHUP {
                            reload(&shared);
                            continue;
                        }
                        tracing::info!(signal = sig, "stopping: draining in-flight requests");
                        shared.stop.store(true, std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                })
                .ok();
        }
        Err(e) => tracing::warn!(error = %e, "cannot install signal handlers"),
    }
    match proxy.join() {
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
fn reload(shared: &ringway::ctx::Shared) {
    match &shared.server_tls {
        Some(tls) => match tls.reload() {
            Ok(()) => tracing::info!("reloaded the TLS certificates and keys"),
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the certificates in use")
            }
        },
        None => tracing::info!("SIGHUP: nothing to reload (no --listen-tls)"),
    }
}
