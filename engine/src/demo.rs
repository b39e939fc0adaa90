//! `ringway demo`: the proxy doing real work out of the box. Starts a built-in origin
//! (`ringway-origin`), the proxy in front of it on loopback, and a short bounded load
//! through it (`ringway-bench`), then prints requests/s, latency percentiles and how many
//! backend connections the proxy opened for how many requests.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ringway_bench::load::{self, LoadConfig};
use ringway_bench::origin::{Origin, OriginConfig};

use crate::config::{Cli, Config, DemoArgs};
use crate::process::Proxy;

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let origin = Origin::start(OriginConfig {
        shards: 1,
        ..OriginConfig::default()
    })
    .context("starting the built-in origin")?;
    let backend = origin.addr().to_string();
    let cli = Cli::try_parse_from([
        "ringway",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        &format!("demo={backend}"),
        "--shards",
        "1",
        "--log",
        "warn",
    ])
    .context("demo flags")?;
    let config = Config::from_opts(&cli.opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let proxy = Proxy::start(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let addr = proxy.listen[0];
    println!("ringway demo: origin on {backend}, proxy on {addr} (1 shard)");
    println!(
        "load: {} keep-alive connections for {:?}, GET / ({} bytes)...",
        args.connections,
        args.duration,
        OriginConfig::default().body_size
    );
    let cfg = LoadConfig {
        url: format!("http://{addr}/"),
        connections: args.connections,
        duration: Some(args.duration),
        warmup: Duration::from_millis(500),
        threads: 1,
        progress: false,
        ..LoadConfig::default()
    };
    let report = load::run(&cfg);
    let stats = origin.stats();
    proxy.stop();
    let joined = proxy.join();
    origin.stop();
    let report = report.context("running the load")?;
    joined.map_err(|e| anyhow::anyhow!("proxy: {e}"))?;

    println!();
    report.print_human();
    println!();
    println!(
        "backend connections opened: {} for {} requests (reuse {:.2}%)",
        stats.connections_total,
        stats.requests_total,
        if stats.requests_total > 0 {
            100.0 * (1.0 - stats.connections_total as f64 / stats.requests_total as f64)
        } else {
            0.0
        }
    );
    let errors = report.errors.total();
    if errors > 0 || report.status_2xx == 0 {
        anyhow::bail!(
            "the demo saw {errors} errors and {} 2xx responses",
            report.status_2xx
        );
    }
    Ok(())
}
