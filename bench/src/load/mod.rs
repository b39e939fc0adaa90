//! `ringway_bench::load`: the load generator, as a library.
//!
//! [`run`] checks a [`LoadConfig`], starts one glommio executor per shard (pinned with
//! `Placement::Fixed` when CPUs are given), lets each shard drive its share of the
//! connections (see `schedule`), prints a progress line once a second if asked, and merges
//! the shards' tallies into a [`Report`]. The `ringway-bench` binary and `ringway demo`
//! both call it. The calling thread only waits and prints; it never touches a socket.

pub mod config;
pub mod framing;
pub mod h1;
pub mod h2;
pub mod report;
pub mod schedule;

use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use glommio::{LocalExecutorBuilder, Placement};

pub use config::{LoadConfig, Plan, Stop, Target};
pub use report::{ErrorCounts, Report, Tally};
use schedule::{Clock, ShardProgress};

/// Time given to the shards to start and open their connections before the first
/// request is scheduled, so connection set-up is not charged to the first requests.
const START_DELAY: Duration = Duration::from_millis(100);

/// Memory glommio registers per ring; TCP never uses it, and small keeps us under memlock.
const IO_MEMORY: usize = 64 << 10;

/// Runs the load described by `cfg` and returns what was measured.
pub fn run(cfg: &LoadConfig) -> anyhow::Result<Report> {
    let plan = Plan::from_config(cfg)?;
    ringway_sys::memlock::check()?;
    let plan = Arc::new(plan);
    let start = Instant::now() + START_DELAY;
    let clock = Clock::new(&plan, start);
    let progress: Vec<Arc<ShardProgress>> = plan
        .shards
        .iter()
        .map(|_| Arc::new(ShardProgress::default()))
        .collect();

    let mut handles = Vec::with_capacity(plan.shards.len());
    for (shard, cpu) in plan.shards.iter().enumerate() {
        let placement = match cpu {
            Some(c) => Placement::Fixed(*c),
            None => Placement::Unbound,
        };
        let plan = plan.clone();
        let p = progress[shard].clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("load-{shard}"))
            .io_memory(IO_MEMORY)
            .spawn(move || async move {
                let plan = Rc::new((*plan).clone());
                let out = schedule::run_shard(plan, shard, clock, p.clone()).await;
                p.done.store(true, Ordering::Release);
                out
            });
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => bail!("{}", executor_error(&e.to_string(), *cpu)),
        }
    }

    if plan.progress {
        print_progress(&plan, &clock, &progress);
    }

    let mut total = Tally::new();
    let mut last: Option<Instant> = None;
    for (h, cpu) in handles.into_iter().zip(plan.shards.iter()) {
        let (tally, shard_last) = match h.join() {
            Ok(r) => r?,
            Err(e) => bail!("{}", executor_error(&e.to_string(), *cpu)),
        };
        total.merge(&tally);
        last = last.max(shard_last);
    }
    let end = match (clock.stop_at, last) {
        (Some(stop), Some(l)) => stop.max(l),
        (Some(stop), None) => stop,
        (None, Some(l)) => l,
        (None, None) => clock.measure_from,
    };
    let duration = end.saturating_duration_since(clock.measure_from);
    Ok(Report::new(total, duration, plan.rate, plan.http2))
}

/// Prints `[  3.0s] 123456 responses, 98765 req/s, 0 errors` on stderr once a second
/// until every shard is done.
fn print_progress(plan: &Plan, clock: &Clock, progress: &[Arc<ShardProgress>]) {
    let started = Instant::now();
    let mut last_count = 0u64;
    let mut next = started + Duration::from_secs(1);
    let mut last_tick = started;
    loop {
        if progress.iter().all(|p| p.done.load(Ordering::Acquire)) {
            return;
        }
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(20)));
            continue;
        }
        let count: u64 = progress
            .iter()
            .map(|p| p.responses.load(Ordering::Relaxed))
            .sum();
        let errors: u64 = progress
            .iter()
            .map(|p| p.errors.load(Ordering::Relaxed))
            .sum();
        let rate = (count - last_count.min(count)) as f64 / (now - last_tick).as_secs_f64();
        let phase = if now < clock.measure_from {
            " (warm-up)"
        } else {
            ""
        };
        let target = match plan.rate {
            Some(r) => format!(" (target {r:.0})"),
            None => String::new(),
        };
        let _ = writeln!(
            std::io::stderr(),
            "[{:>6.1}s] {count} responses, {rate:.0} req/s{target}, {errors} errors{phase}",
            (now - started).as_secs_f64()
        );
        last_count = count;
        last_tick = now;
        next += Duration::from_secs(1);
    }
}

fn executor_error(msg: &str, cpu: Option<usize>) -> String {
    if msg.contains("MemLock") || msg.contains("memlock") {
        return format!(
            "glommio could not start: {msg}. Raise the locked-memory limit (`ulimit -l {}`)",
            ringway_sys::memlock::MIN_MEMLOCK_KIB
        );
    }
    match cpu {
        Some(c) if msg.contains("NonExistentCpus") || msg.contains("CPU") => {
            format!("cannot pin a shard on CPU {c}: {msg}. Check --cpus against `nproc`")
        }
        _ => format!("a load shard failed: {msg}"),
    }
}
