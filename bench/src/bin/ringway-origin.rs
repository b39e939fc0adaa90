//! `ringway-origin`: the benchmark and test origin as a process. Parses flags, starts an
//! [`Origin`], prints `listening on ADDR` once on stdout, and runs until SIGINT or
//! SIGTERM, then stops the shards and exits 0. Flag errors exit 2 (clap's convention);
//! start-up failures (address in use, memlock limit) exit 1 with the reason.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use ringway_bench::origin::{
    check_cpus, Origin, OriginConfig, Protocol, DEFAULT_BODY_UNIT, DEFAULT_MAX_CONCURRENT_STREAMS,
};
use ringway_sys::{parse_cpu_list, parse_duration};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A fast HTTP/1.1 (or, with --h2c, HTTP/2) origin for ringway's tests and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "ringway-origin", version)]
struct Args {
    /// Address to listen on (port 0: any free port; the real one is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Number of unpinned shards.
    #[arg(long, default_value_t = 1, conflicts_with = "cpus",
          value_parser = clap::value_parser!(u16).range(1..))]
    shards: u16,
    /// One shard pinned on each listed CPU, e.g. 0-1,3.
    #[arg(long, value_parser = cpu_list)]
    cpus: Option<CpuList>,
    /// Body size of `GET /` and unknown paths.
    #[arg(long, default_value_t = DEFAULT_BODY_UNIT.len())]
    body_size: usize,
    /// Close each connection after this many requests (with --h2c: GOAWAY after this
    /// many streams, which are still answered).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    close_after: Option<u64>,
    /// Close connections idle this long (e.g. 1s, 250ms); with --h2c, connections
    /// without an open stream for this long.
    #[arg(long, value_parser = parse_duration)]
    idle_close: Option<Duration>,
    /// Delay every response by this long (e.g. 5ms).
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
    /// Speak HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1, on every connection.
    #[arg(long)]
    h2c: bool,
    /// With --h2c: the SETTINGS_MAX_CONCURRENT_STREAMS announced (0 refuses every stream).
    #[arg(long, requires = "h2c", value_name = "N")]
    max_concurrent_streams: Option<u32>,
}

/// A parsed `--cpus` value (a newtype, so clap takes it as one value, not many).
#[derive(Debug, Clone)]
struct CpuList(Vec<usize>);

fn cpu_list(s: &str) -> Result<CpuList, ringway_sys::ValueError> {
    parse_cpu_list(s).map(CpuList)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cpus = args.cpus.map(|c| c.0);
    if let Some(cpus) = &cpus {
        if let Err(e) = check_cpus(cpus) {
            Args::command()
                .error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("--cpus: {e}"),
                )
                .exit();
        }
    }
    let cfg = OriginConfig {
        listen: args.listen,
        shards: usize::from(args.shards),
        cpus,
        body_size: args.body_size,
        close_after: args.close_after,
        idle_close: args.idle_close,
        delay: args.delay,
        protocol: if args.h2c {
            Protocol::H2c
        } else {
            Protocol::Http1
        },
        max_concurrent_streams: args
            .max_concurrent_streams
            .unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS),
        refuse_streams: false,
    };
    // Signals are caught before "listening" is printed, so a supervisor that signals
    // right after reading the line gets a clean exit.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringway-origin: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let origin = match Origin::start(cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ringway-origin: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "listening on {}", origin.addr())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(out);
    let _ = signals.forever().next();
    match origin.stop_and_join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringway-origin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
