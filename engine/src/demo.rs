//! `ringway demo`: the proxy doing real work out of the box. Starts a built-in origin
//! (`ringway-origin`), the proxy in front of it on loopback, and a short bounded load
//! through it (`ringway-bench`), then prints requests/s, latency percentiles and how many
//! backend connections the proxy opened for how many requests.
//!
//! The origin and the load generator come from the `ringway-bench` crate, which is linked
//! only with the `demo` cargo feature (on by default). A build without it
//! (`--no-default-features`, for production) still knows the subcommand and answers
//! [`DemoError::NotBuiltIn`], which `main` turns into exit status 2.

use crate::config::DemoArgs;

/// Why the demo did not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// This binary was built without the `demo` feature.
    #[error("the demo is not built into this binary (it was built without the `demo` cargo feature); build one with it: `cargo build --release` (the feature is on by default)")]
    NotBuiltIn,
    /// The origin, the proxy or the load failed, or the load saw errors.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl DemoError {
    /// The exit status `ringway demo` ends with: 2 when the demo is not built in (the
    /// request cannot be served by this binary, like a bad flag), 1 when it failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            DemoError::NotBuiltIn => 2,
            DemoError::Failed(_) => 1,
        }
    }
}

/// Runs the demo. Without the `demo` feature: always [`DemoError::NotBuiltIn`].
pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    #[cfg(feature = "demo")]
    {
        with_bench::run(args).map_err(DemoError::Failed)
    }
    #[cfg(not(feature = "demo"))]
    {
        let _ = args;
        Err(DemoError::NotBuiltIn)
    }
}

#[cfg(feature = "demo")]
mod with_bench {
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
            &args.shards.to_string(),
            "--log",
            "warn",
            "--access-log",
            "off",
        ])
        .context("demo flags")?;
        let config = Config::from_opts(&cli.opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        let proxy = Proxy::start(config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let addr = proxy.listen[0];
        println!(
            "ringway demo: origin on {backend}, proxy on {addr} ({} shard(s))",
            args.shards
        );
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_built_in_exits_2_and_says_how_to_get_it() {
        let e = DemoError::NotBuiltIn;
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.contains("not built into this binary"), "{msg}");
        assert!(msg.contains("`demo` cargo feature"), "{msg}");
        assert_eq!(DemoError::Failed(anyhow::anyhow!("x")).exit_code(), 1);
    }

    /// Only in a build without the feature: `run` refuses at once, touching nothing.
    #[cfg(not(feature = "demo"))]
    #[test]
    fn without_the_feature_run_is_not_built_in() {
        let args = DemoArgs {
            duration: std::time::Duration::from_secs(1),
            connections: 1,
        };
        assert!(matches!(run(&args), Err(DemoError::NotBuiltIn)));
    }
}
