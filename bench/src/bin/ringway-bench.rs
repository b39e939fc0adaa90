//! `ringway-bench`: the load generator's command line.
//!
//! Parses flags in the style of wrk/h2load into a `LoadConfig`, runs it with
//! `ringway_bench::load::run`, and prints the report as text or JSON (`--json`), optionally
//! writing the latency histogram as an HDR log (`--hdr-out`). `ringway-bench idle URL
//! --conns N --pid PID` is the idle-memory probe instead (`ringway_bench::idle`). Every
//! flag error names the flag and what it expects; nothing here panics on input.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ringway_bench::load::{self, config, LoadConfig};
use ringway_sys::{parse_cpu_list as cpu_list, parse_duration};

/// A glommio load generator for HTTP/1.1 and HTTP/2 (h2c), closed or open loop.
///
/// Open loop (--rate) measures latency from each request's intended send time, so a
/// stalled server shows in the tail instead of silently slowing the generator down.
#[derive(Parser, Debug)]
#[command(name = "ringway-bench", version)]
struct Args {
    /// Target URL, e.g. http://127.0.0.1:8080/size/16384
    url: String,
    /// Connections in total
    #[arg(short = 'c', long, default_value_t = 10)]
    connections: usize,
    /// Measured duration (e.g. 10s, 500ms); ignored with -n
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    duration: std::time::Duration,
    /// Measure exactly this many requests instead of a duration
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Warm-up before measuring (default 1s with -d, 0s with -n)
    #[arg(short = 'w', long, value_parser = parse_duration)]
    warmup: Option<std::time::Duration>,
    /// Open loop: total requests per second, latency from intended send times
    #[arg(short = 'R', long)]
    rate: Option<f64>,
    /// HTTP/2 with prior knowledge (h2c)
    #[arg(short = '2', long)]
    http2: bool,
    /// Concurrent streams per HTTP/2 connection
    #[arg(short = 'm', long, default_value_t = 1)]
    streams: usize,
    /// HTTP/1.1: one connection per request (Connection: close)
    #[arg(long)]
    close: bool,
    /// Request method
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// Extra request header 'Name: value' (repeatable)
    #[arg(short = 'H', long = "header", value_parser = config::parse_header)]
    headers: Vec<(String, String)>,
    /// Request body size in bytes
    #[arg(short = 'b', long, default_value_t = 0)]
    body_size: usize,
    /// Pin one shard on each CPU of this list (e.g. 1 or 0-3,8)
    #[arg(long, value_parser = parse_cpu_list)]
    cpus: Option<CpuList>,
    /// Unpinned shards when --cpus is not given
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// Connect timeout and longest wait for response bytes
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: std::time::Duration,
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Write the latency histogram (µs) as an HDR histogram log to this file
    #[arg(long)]
    hdr_out: Option<PathBuf>,
    /// No progress line on stderr
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// A parsed `--cpus` list (a newtype: clap would read a bare `Vec` as a repeated flag).
#[derive(Debug, Clone)]
struct CpuList(Vec<usize>);

fn parse_cpu_list(s: &str) -> Result<CpuList, ringway_sys::ValueError> {
    cpu_list(s).map(CpuList)
}

/// `ringway-bench idle`: opens N keep-alive connections, one request each, and reports
/// how much a process's resident set grew per idle connection.
#[derive(Parser, Debug)]
#[command(name = "ringway-bench idle", version)]
struct IdleArgs {
    /// Target URL, e.g. http://127.0.0.1:8080/ (its responses need a Content-Length)
    url: String,
    /// Connections to open and leave idle
    #[arg(short = 'c', long, default_value_t = 5000)]
    conns: usize,
    /// The process whose resident set (VmRSS) is measured, e.g. the proxy's
    #[arg(long)]
    pid: Option<u32>,
    /// Write every request before reading any response (with a slow path such as
    /// /delay/200 the proxy then needs, and afterwards pools, one backend connection each)
    #[arg(long)]
    concurrent: bool,
    /// HTTP/2 with prior knowledge (h2c), one stream per connection
    #[arg(short = '2', long)]
    http2: bool,
    /// Keep the connections open this long after measuring (e.g. 30s)
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    hold: std::time::Duration,
    /// Connect timeout and longest wait for response bytes
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: std::time::Duration,
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "idle") {
        let args = IdleArgs::parse_from(std::env::args_os().skip(1));
        return match run_idle(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringway-bench idle: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringway-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_idle(args: IdleArgs) -> anyhow::Result<()> {
    let cfg = ringway_bench::idle::IdleConfig {
        target: config::parse_url(&args.url)?,
        conns: args.conns,
        pid: args.pid,
        concurrent: args.concurrent,
        http2: args.http2,
        timeout: args.timeout,
    };
    let held = ringway_bench::idle::run(&cfg)?;
    if args.json {
        println!("{}", held.report.to_json());
    } else {
        held.report.print_human();
    }
    std::thread::sleep(args.hold);
    held.close();
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    let warmup = args.warmup.unwrap_or(if args.requests.is_some() {
        std::time::Duration::ZERO
    } else {
        std::time::Duration::from_secs(1)
    });
    let cfg = LoadConfig {
        url: args.url,
        connections: args.connections,
        duration: Some(args.duration),
        requests: args.requests,
        warmup,
        rate: args.rate,
        http2: args.http2,
        streams: args.streams,
        close: args.close,
        method: args.method,
        headers: args.headers,
        body_size: args.body_size,
        cpus: args.cpus.map(|c| c.0),
        threads: args.threads,
        timeout: args.timeout,
        progress: !args.quiet,
    };
    let report = load::run(&cfg)?;
    if let Some(path) = &args.hdr_out {
        report
            .write_hdr_log(path)
            .with_context(|| format!("--hdr-out {}", path.display()))?;
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        report.print_human();
    }
    Ok(())
}
