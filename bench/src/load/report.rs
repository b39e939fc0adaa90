//! What a run measured: per-shard tallies while running, one [`Report`] at the end.
//!
//! Each shard records into its own [`Tally`] (an HDR histogram of latencies in
//! microseconds, status classes, errors by kind, body bytes) with no sharing and no
//! allocation per request; the run merges the tallies once the shards have finished.
//! This module also renders a report: as text for people, as JSON for scripts, and as an
//! HDR histogram log (V2, compressed) for plotting tools. It never touches a socket.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde_json::json;

/// The largest latency the histograms hold, in µs (one hour); larger values are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Errors by kind. A request that fails counts once, under the first kind that applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// The connection could not be established (refused, unreachable, connect timeout).
    pub connect: u64,
    /// The peer reset the connection (`ECONNRESET`, `EPIPE`, an HTTP/2 `RST_STREAM`).
    pub reset: u64,
    /// No response byte arrived within `timeout`.
    pub timeout: u64,
    /// Responses with a 4xx status (also counted in `Report::requests`).
    pub status_4xx: u64,
    /// Responses with a 5xx status (also counted in `Report::requests`).
    pub status_5xx: u64,
    /// The peer closed the connection cleanly before a whole response arrived.
    pub closed: u64,
    /// Anything else: malformed responses, heads too large, HTTP/2 protocol errors.
    pub other: u64,
}

impl ErrorCounts {
    /// Errors that ended a request without a response (statuses excluded).
    pub fn transport(&self) -> u64 {
        self.connect + self.reset + self.timeout + self.closed + self.other
    }

    /// Every error, status errors included.
    pub fn total(&self) -> u64 {
        self.transport() + self.status_4xx + self.status_5xx
    }

    fn add(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.reset += o.reset;
        self.timeout += o.timeout;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.closed += o.closed;
        self.other += o.other;
    }
}

/// Why a request failed without a response; see [`ErrorCounts`] for the meaning of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Reset,
    Timeout,
    Closed,
    Other,
}

impl ErrorKind {
    /// Sorts an I/O error from a request or a response into a kind.
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => ErrorKind::Reset,
            K::TimedOut | K::WouldBlock => ErrorKind::Timeout,
            K::UnexpectedEof => ErrorKind::Closed,
            K::ConnectionRefused | K::AddrNotAvailable | K::NotConnected => ErrorKind::Connect,
            _ => ErrorKind::Other,
        }
    }
}

/// One shard's measurements, merged into a [`Report`] at the end of a run.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency in µs of every measured response.
    pub latency: Histogram<u64>,
    pub responses: u64,
    pub status: [u64; 6],
    pub errors: ErrorCounts,
    pub bytes: u64,
    /// Connections opened (successfully) during the whole run, warm-up included.
    pub connects: u64,
    /// Responses received during the whole run, warm-up included.
    pub all_responses: u64,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            latency: new_histogram(),
            responses: 0,
            status: [0; 6],
            errors: ErrorCounts::default(),
            bytes: 0,
            connects: 0,
            all_responses: 0,
        }
    }

    /// Records a measured response.
    #[inline]
    pub fn response(&mut self, status: u16, latency_us: u64, body_bytes: u64) {
        self.latency
            .saturating_record(latency_us.clamp(1, MAX_LATENCY_US));
        self.responses += 1;
        self.bytes += body_bytes;
        let class = usize::from(status / 100).min(5);
        self.status[class] += 1;
        match class {
            4 => self.errors.status_4xx += 1,
            5 => self.errors.status_5xx += 1,
            _ => {}
        }
    }

    /// Records a measured request that failed without a response.
    #[inline]
    pub fn error(&mut self, kind: ErrorKind) {
        let e = &mut self.errors;
        match kind {
            ErrorKind::Connect => e.connect += 1,
            ErrorKind::Reset => e.reset += 1,
            ErrorKind::Timeout => e.timeout += 1,
            ErrorKind::Closed => e.closed += 1,
            ErrorKind::Other => e.other += 1,
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Tally) {
        // Both histograms share the same bounds, so adding cannot fail; ignore defensively.
        let _ = self.latency.add(&other.latency);
        self.responses += other.responses;
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        self.errors.add(&other.errors);
        self.bytes += other.bytes;
        self.connects += other.connects;
        self.all_responses += other.all_responses;
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits: about 200 KiB; cannot fail with these bounds.
    match Histogram::new_with_bounds(1, MAX_LATENCY_US, 3) {
        Ok(h) => h,
        Err(_) => Histogram::new(3).unwrap_or_else(|_| unreachable!("3 sigfigs is valid")),
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Responses measured (any status), warm-up excluded.
    pub requests: u64,
    /// The measured window: from the end of the warm-up to the last measured response.
    pub duration: Duration,
    /// `requests / duration`.
    pub rps: f64,
    /// Latency of every measured response, in µs. In open loop (`rate`) it runs from the
    /// request's intended send time, so stalls are not hidden by coordinated omission.
    pub latency: Histogram<u64>,
    pub errors: ErrorCounts,
    pub status_1xx: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    /// Response body bytes received (measured responses only).
    pub bytes: u64,
    /// Connections opened during the whole run, warm-up included.
    pub connections_opened: u64,
    /// Responses received during the whole run, warm-up included (to divide a server's
    /// CPU time measured over the whole run by).
    pub responses_incl_warmup: u64,
    /// The open-loop target rate, if any.
    pub target_rate: Option<f64>,
    /// Whether the run was HTTP/2.
    pub http2: bool,
}

impl Report {
    /// Builds the report from the merged tally and the measured window.
    pub fn new(t: Tally, duration: Duration, target_rate: Option<f64>, http2: bool) -> Report {
        let secs = duration.as_secs_f64();
        Report {
            requests: t.responses,
            duration,
            rps: if secs > 0.0 {
                t.responses as f64 / secs
            } else {
                0.0
            },
            latency: t.latency,
            errors: t.errors,
            status_1xx: t.status[1],
            status_2xx: t.status[2],
            status_3xx: t.status[3],
            bytes: t.bytes,
            connections_opened: t.connects,
            responses_incl_warmup: t.all_responses,
            target_rate,
            http2,
        }
    }

    /// The latency at `q` (0..=100) percent, in µs; 0 with no responses.
    pub fn percentile(&self, q: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_quantile(q / 100.0)
        }
    }

    pub fn p50(&self) -> u64 {
        self.percentile(50.0)
    }
    pub fn p90(&self) -> u64 {
        self.percentile(90.0)
    }
    pub fn p99(&self) -> u64 {
        self.percentile(99.0)
    }
    pub fn p999(&self) -> u64 {
        self.percentile(99.9)
    }
    pub fn p9999(&self) -> u64 {
        self.percentile(99.99)
    }
    pub fn max(&self) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.max()
        }
    }
    pub fn mean(&self) -> f64 {
        if self.latency.is_empty() {
            0.0
        } else {
            self.latency.mean()
        }
    }

    /// The report as JSON (latencies in µs).
    pub fn to_json(&self) -> serde_json::Value {
        let e = &self.errors;
        json!({
            "requests": self.requests,
            "duration_s": self.duration.as_secs_f64(),
            "rps": self.rps,
            "target_rate": self.target_rate,
            "http2": self.http2,
            "bytes": self.bytes,
            "connections_opened": self.connections_opened,
            "responses_incl_warmup": self.responses_incl_warmup,
            "latency_us": {
                "mean": self.mean(),
                "p50": self.p50(),
                "p90": self.p90(),
                "p99": self.p99(),
                "p999": self.p999(),
                "p9999": self.p9999(),
                "max": self.max(),
            },
            "status": {
                "1xx": self.status_1xx,
                "2xx": self.status_2xx,
                "3xx": self.status_3xx,
                "4xx": e.status_4xx,
                "5xx": e.status_5xx,
            },
            "errors": {
                "connect": e.connect,
                "reset": e.reset,
                "timeout": e.timeout,
                "closed": e.closed,
                "other": e.other,
                "status_4xx": e.status_4xx,
                "status_5xx": e.status_5xx,
                "total": e.total(),
            },
        })
    }

    /// Prints the report for people, on stdout.
    pub fn print_human(&self) {
        let mut out = std::io::stdout().lock();
        // A closed stdout is not worth failing a finished run for.
        let _ = out.write_all(self.human().as_bytes());
    }

    /// The text that [`Report::print_human`] prints.
    pub fn human(&self) -> String {
        let e = &self.errors;
        let mode = match self.target_rate {
            Some(r) => format!("open loop at {r:.0} req/s (latency from intended send time)"),
            None => "closed loop".to_string(),
        };
        let mut s = String::new();
        s += &format!(
            "{} requests in {:.2}s, {:.0} req/s, {} body, {} ({})\n",
            self.requests,
            self.duration.as_secs_f64(),
            self.rps,
            human_bytes(self.bytes),
            if self.http2 { "HTTP/2" } else { "HTTP/1.1" },
            mode
        );
        s += "latency   mean      p50      p90      p99    p99.9   p99.99      max\n";
        s += &format!(
            "        {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            us(self.mean() as u64),
            us(self.p50()),
            us(self.p90()),
            us(self.p99()),
            us(self.p999()),
            us(self.p9999()),
            us(self.max())
        );
        s += &format!(
            "status  1xx {}  2xx {}  3xx {}  4xx {}  5xx {}\n",
            self.status_1xx, self.status_2xx, self.status_3xx, e.status_4xx, e.status_5xx
        );
        s += &format!(
            "errors  connect {}  reset {}  timeout {}  closed {}  other {}\n",
            e.connect, e.reset, e.timeout, e.closed, e.other
        );
        s
    }

    /// Writes the latency histogram as an HDR histogram log (one interval, V2 + deflate,
    /// values in µs) to `path`, readable by HdrHistogram's log tools and plotters.
    pub fn write_hdr_log(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let mut file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut serializer = V2DeflateSerializer::new();
        let start = SystemTime::now()
            .checked_sub(self.duration)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment("ringway-bench latency, microseconds")
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1.0)
            .begin_log_with(&mut file, &mut serializer)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        let tag = Tag::new("latency_us");
        writer
            .write_histogram(&self.latency, Duration::ZERO, self.duration, tag)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e:?}", path.display()))?;
        drop(writer);
        file.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Formats µs as `850us`, `1.25ms` or `2.10s`.
pub fn us(v: u64) -> String {
    if v < 1_000 {
        format!("{v}us")
    } else if v < 1_000_000 {
        format!("{:.2}ms", v as f64 / 1e3)
    } else {
        format!("{:.2}s", v as f64 / 1e6)
    }
}

fn human_bytes(b: u64) -> String {
    if b < 1 << 20 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else if b < 1 << 30 {
        format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.2} GiB", b as f64 / f64::from(1u32 << 30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_errors_land_in_their_classes() {
        let mut a = Tally::new();
        a.response(200, 100, 10);
        a.response(404, 100, 0);
        a.response(503, 100, 0);
        a.error(ErrorKind::Reset);
        let mut b = Tally::new();
        b.response(204, 5000, 0);
        b.error(ErrorKind::Connect);
        a.merge(&b);
        let r = Report::new(a, Duration::from_secs(2), None, false);
        assert_eq!(r.requests, 4);
        assert_eq!(r.status_2xx, 2);
        assert_eq!(r.errors.status_4xx, 1);
        assert_eq!(r.errors.status_5xx, 1);
        assert_eq!((r.errors.reset, r.errors.connect), (1, 1));
        assert_eq!(r.rps, 2.0);
        assert!(r.max() >= 4990);
        assert_eq!(r.to_json()["errors"]["total"], 4);
    }
}
