//! The access log: one line per request, HAProxy `httplog`-like text or JSON, written
//! without ever blocking a shard.
//!
//! Each shard formats its lines into its own buffer ([`ShardLog`]); a full buffer (or
//! the shard's flush tick) is handed to one writer thread through a bounded channel
//! ([`Hub`]) with `try_send`. When the writer falls behind (a slow disk, a stdout pipe
//! nobody reads) the channel is full and the batch is dropped and counted
//! (`ringway_access_log_dropped_total`), never queued without limit: a request never
//! waits for the log. The writer reopens its file on `SIGUSR1` (for logrotate).
//!
//! The text format, one field per space-separated column:
//!
//! ```text
//! 127.0.0.1 [12/Mar/2025:10:11:12.345] 0 h1 api/10.0.0.5:9000 0/0/1/2/3 200 1234 reused -- "GET /x HTTP/1.1"
//! client    [date, UTC]               shard front backend/server Tq/Tw/Tc/Tr/Ta status bytes conn term "request"
//! ```
//!
//! Timers are in milliseconds, `-1` when the stage was not reached (as HAProxy): `Tq`
//! getting the request head (keep-alive idle time included), `Tw` waiting for a
//! connection (pool, takeover asks), `Tc` connecting, `Tr` from having the connection to
//! the first response byte sent, `Ta` the whole request. `conn` is `reused`,
//! `taken-over`, `new` or `-`; `term` is the termination state
//! ([`Term`](crate::trace::Term)).

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::trace::Trace;
use crate::upstream::Acquired;

/// A shard hands its buffer over once it holds this much.
pub const FLUSH_AT: usize = 32 << 10;
/// Batches the writer may be behind before shards drop lines (at most ~512 KiB queued).
pub const QUEUE_BATCHES: usize = 16;
/// How often a shard hands over a partly filled buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

pub use crate::config::values::{AccessLogTarget as Target, TextOrJson as Format};

/// The process's end of the access log: the channel every shard sends batches into,
/// and the receiving end until the writer thread takes it.
pub struct Hub {
    pub format: Format,
    pub target: Target,
    tx: Mutex<Option<SyncSender<Vec<u8>>>>,
    rx: Mutex<Option<Receiver<Vec<u8>>>>,
    reopen: Arc<AtomicBool>,
    /// Set once the shards stopped: the writer writes what is queued and ends.
    closing: Arc<AtomicBool>,
    /// The file, once [`Hub::open`] opened it, until the writer takes it.
    opened: Mutex<Option<Output>>,
}

impl Hub {
    pub fn new(target: Target, format: Format) -> Hub {
        let (tx, rx) = if target == Target::Off {
            (None, None)
        } else {
            let (tx, rx) = mpsc::sync_channel(QUEUE_BATCHES);
            (Some(tx), Some(rx))
        };
        Hub {
            format,
            target,
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
            reopen: Arc::new(AtomicBool::new(false)),
            closing: Arc::new(AtomicBool::new(false)),
            opened: Mutex::new(None),
        }
    }

    /// Opens the target (a file: created, appended to) without starting the writer, so
    /// that the process holds its file before it announces its listeners (a count of
    /// open fds taken then is the whole idle set) and an unopenable file stops it before
    /// it says it listens. [`Hub::start_writer`] opens it itself if this was not called.
    pub fn open(&self) -> io::Result<()> {
        if self.target == Target::Off {
            return Ok(());
        }
        let out = Output::open(&self.target)?;
        if let Ok(mut g) = self.opened.lock() {
            *g = Some(out);
        }
        Ok(())
    }

    /// A shard's buffer onto this hub (a no-op log when the access log is off).
    pub fn shard_log(&self, shard: usize) -> ShardLog {
        let tx = self.tx.lock().ok().and_then(|g| g.clone());
        ShardLog {
            shard,
            format: self.format,
            buf: RefCell::new(Vec::with_capacity(if tx.is_some() {
                FLUSH_AT * 2
            } else {
                0
            })),
            lines: Cell::new(0),
            texts: RefCell::new(Texts::default()),
            tx,
        }
    }

    /// Asks the writer to reopen its file (`SIGUSR1`).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
    }

    /// Opens the target (unless [`Hub::open`] did) and starts the writer thread. Until
    /// this runs, batches wait in
    /// the channel (so `listening on` lines on stdout come first). `Ok(None)` when off.
    pub fn start_writer(&self) -> io::Result<Option<Writer>> {
        let Some(rx) = self.rx.lock().ok().and_then(|mut g| g.take()) else {
            return Ok(None);
        };
        let opened = self.opened.lock().ok().and_then(|mut g| g.take());
        let mut out = match opened {
            Some(out) => out,
            None => Output::open(&self.target)?,
        };
        let target = self.target.clone();
        let reopen = self.reopen.clone();
        let closing = self.closing.clone();
        let (done_tx, done) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("ringway-access-log".into())
            .spawn(move || loop {
                if reopen.swap(false, Ordering::SeqCst) {
                    match Output::open(&target) {
                        Ok(o) => {
                            tracing::info!(file = %target, "access log reopened");
                            out = o;
                        }
                        Err(e) => {
                            tracing::error!(file = %target, error = %e, "cannot reopen the access log; writing on to the old file")
                        }
                    }
                }
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(batch) => out.write(&batch),
                    Err(RecvTimeoutError::Timeout) if !closing.load(Ordering::SeqCst) => {}
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                        // Stopping (or every sender gone): write what is left, then end.
                        while let Ok(batch) = rx.try_recv() {
                            out.write(&batch);
                        }
                        out.flush();
                        let _ = done_tx.send(());
                        return;
                    }
                }
            })?;
        Ok(Some(Writer { done }))
    }

    /// No more shards will log (they stopped and flushed): the writer ends once it
    /// wrote what was sent.
    pub fn close(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        self.closing.store(true, Ordering::SeqCst);
    }
}

/// The writer thread, for [`Writer::join`] at exit.
pub struct Writer {
    done: Receiver<()>,
}

impl Writer {
    /// Waits until every line sent so far is written (call after [`Hub::close`] and
    /// after the shards stopped), at most `within`: a writer stuck on a full pipe must
    /// not keep the process from exiting.
    pub fn join(self, within: Duration) -> bool {
        self.done.recv_timeout(within).is_ok()
    }
}

enum Output {
    Stdout,
    File(File),
}

impl Output {
    fn open(target: &Target) -> io::Result<Output> {
        match target {
            Target::File(p) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map(Output::File)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot open --access-log {}: {e}", p.display()),
                    )
                }),
            _ => Ok(Output::Stdout),
        }
    }

    /// Writes a batch; a failed write loses it (the log must never stop the proxy).
    fn write(&mut self, batch: &[u8]) {
        let _ = match self {
            Output::Stdout => {
                let mut o = io::stdout().lock();
                o.write_all(batch).and_then(|()| o.flush())
            }
            Output::File(f) => f.write_all(batch),
        };
    }

    fn flush(&mut self) {
        let _ = match self {
            Output::Stdout => io::stdout().lock().flush(),
            Output::File(f) => f.flush(),
        };
    }
}

/// One shard's access log buffer. Lines are appended here; full buffers leave with
/// `try_send`, never a wait.
pub struct ShardLog {
    shard: usize,
    format: Format,
    buf: RefCell<Vec<u8>>,
    /// Lines in `buf`.
    lines: Cell<u64>,
    texts: RefCell<Texts>,
    tx: Option<SyncSender<Vec<u8>>>,
}

/// Text a shard's lines repeat, kept as last formatted: the date up to the second (it
/// changes once a second, not once a line), the last client address and the last server
/// address (a keep-alive connection's requests share both). `core::fmt` for these was
/// most of a line's cost: 8,600 instructions per line before (`bench/instructions.sh` with
/// a log file), of which the date took 2,100 and the two addresses 3,200.
#[derive(Default)]
pub struct Texts {
    /// Seconds since the epoch and the text up to them, per format (text, JSON).
    date: [Option<(u64, Vec<u8>)>; 2],
    client: Option<(IpAddr, Vec<u8>)>,
    server: Option<(std::net::SocketAddr, Vec<u8>)>,
}

/// Appends `key`'s text from `slot`, formatting it into the slot first when the slot holds
/// another key's.
fn push_cached<K: PartialEq + Copy>(
    out: &mut Vec<u8>,
    slot: &mut Option<(K, Vec<u8>)>,
    key: K,
    format: impl FnOnce(&mut Vec<u8>),
) {
    match slot {
        Some((k, text)) if *k == key => out.extend_from_slice(text),
        _ => {
            let mut text = slot.take().map(|(_, t)| t).unwrap_or_default();
            text.clear();
            format(&mut text);
            out.extend_from_slice(&text);
            *slot = Some((key, text));
        }
    }
}

fn push_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// What the request's log line needs besides its trace.
pub struct LineFacts<'a> {
    pub status: u16,
    pub done: Instant,
    pub backend: Option<&'a str>,
    pub server: Option<std::net::SocketAddr>,
}

impl ShardLog {
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Appends one request's line. Returns the lines dropped meanwhile (a buffer handed
    /// over while the writer was behind).
    pub fn log(&self, t: &Trace, facts: &LineFacts<'_>) -> u64 {
        if self.tx.is_none() {
            return 0;
        }
        {
            let mut buf = self.buf.borrow_mut();
            match self.format {
                Format::Text => {
                    write_text(&mut buf, &mut self.texts.borrow_mut(), self.shard, t, facts)
                }
                Format::Json => {
                    write_json(&mut buf, &mut self.texts.borrow_mut(), self.shard, t, facts)
                }
            }
        }
        self.lines.set(self.lines.get() + 1);
        if self.buf.borrow().len() >= FLUSH_AT {
            self.flush()
        } else {
            0
        }
    }

    /// Hands the buffer to the writer. Returns the number of lines dropped (0, or all
    /// of the buffer's when the writer is behind).
    pub fn flush(&self) -> u64 {
        let Some(tx) = &self.tx else { return 0 };
        let lines = self.lines.replace(0);
        if lines == 0 {
            return 0;
        }
        let batch = std::mem::replace(
            &mut *self.buf.borrow_mut(),
            Vec::with_capacity(FLUSH_AT * 2),
        );
        match tx.try_send(batch) {
            Ok(()) => 0,
            Err(TrySendError::Full(mut back) | TrySendError::Disconnected(mut back)) => {
                // Keep the allocation; the lines are lost and counted.
                back.clear();
                *self.buf.borrow_mut() = back;
                lines
            }
        }
    }
}

/// The timers of a request in milliseconds, `None` where the stage was not reached:
/// (Tq, Tw, Tc, Tr, Ta).
pub fn timers(t: &Trace, done: Instant) -> [Option<u128>; 5] {
    let ms = |d: Duration| d.as_millis();
    let tq = t.tq();
    let lease = t.lease.get();
    let (tw, tc) = match lease {
        None => (None, None),
        Some(l) => match l.how {
            Acquired::Connected(c) => (Some(l.took().saturating_sub(c)), Some(c)),
            _ => (Some(l.took()), Some(Duration::ZERO)),
        },
    };
    let tr = match (lease, t.first_byte.get()) {
        (Some(l), Some(f)) => Some(f.saturating_duration_since(l.at)),
        _ => None,
    };
    let ta = tq + done.saturating_duration_since(t.received.get());
    [
        Some(ms(tq)),
        tw.map(ms),
        tc.map(ms),
        tr.map(ms),
        Some(ms(ta)),
    ]
}

fn conn_name(t: &Trace) -> &'static str {
    t.lease.get().map_or("-", |l| l.how.name())
}

fn push_client(out: &mut Vec<u8>, texts: &mut Texts, ip: IpAddr) {
    push_cached(out, &mut texts.client, ip, |o| {
        let _ = write!(o, "{ip}");
    });
}

fn push_server(out: &mut Vec<u8>, texts: &mut Texts, a: std::net::SocketAddr) {
    push_cached(out, &mut texts.server, a, |o| {
        let _ = write!(o, "{a}");
    });
}

fn write_text(out: &mut Vec<u8>, texts: &mut Texts, shard: usize, t: &Trace, f: &LineFacts<'_>) {
    push_client(out, texts, t.client.get());
    out.extend_from_slice(b" [");
    write_date_cached(out, texts, SystemTime::now(), false);
    out.extend_from_slice(b"] ");
    push_int(out, shard);
    out.push(b' ');
    out.extend_from_slice(t.front.name().as_bytes());
    out.push(b' ');
    out.extend_from_slice(f.backend.unwrap_or("-").as_bytes());
    out.push(b'/');
    match f.server {
        Some(a) => push_server(out, texts, a),
        None => out.extend_from_slice(b"<NOSRV>"),
    }
    out.push(b' ');
    for (i, v) in timers(t, f.done).iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        match v {
            Some(ms) => push_int(out, *ms),
            None => out.extend_from_slice(b"-1"),
        }
    }
    out.push(b' ');
    push_int(out, f.status);
    out.push(b' ');
    push_int(out, t.bytes_out.get());
    out.push(b' ');
    out.extend_from_slice(conn_name(t).as_bytes());
    out.push(b' ');
    out.extend_from_slice(t.term.get().code().as_bytes());
    out.extend_from_slice(b" \"");
    escape_text(out, &t.request_line.borrow());
    out.extend_from_slice(b"\"\n");
}

fn write_json(out: &mut Vec<u8>, texts: &mut Texts, shard: usize, t: &Trace, f: &LineFacts<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    write_date_cached(out, texts, SystemTime::now(), true);
    out.extend_from_slice(b"\",\"client\":\"");
    push_client(out, texts, t.client.get());
    out.extend_from_slice(b"\",\"shard\":");
    push_int(out, shard);
    let _ = write!(out, ",\"front\":\"{}\",", t.front.name());
    match f.backend {
        Some(v) => {
            out.extend_from_slice(b"\"backend\":\"");
            escape_json(out, v.as_bytes());
            out.extend_from_slice(b"\",");
        }
        None => out.extend_from_slice(b"\"backend\":null,"),
    }
    match f.server {
        Some(a) => {
            out.extend_from_slice(b"\"server\":\"");
            push_server(out, texts, a);
            out.extend_from_slice(b"\",");
        }
        None => out.extend_from_slice(b"\"server\":null,"),
    }
    let names = ["tq_ms", "tw_ms", "tc_ms", "tr_ms", "ta_ms"];
    for (name, v) in names.iter().zip(timers(t, f.done)) {
        match v {
            Some(ms) => {
                let _ = write!(out, "\"{name}\":{ms},");
            }
            None => {
                let _ = write!(out, "\"{name}\":null,");
            }
        }
    }
    let _ = write!(
        out,
        "\"status\":{},\"bytes\":{},\"bytes_in\":{},\"conn\":\"{}\",\"term\":\"{}\",\"request\":\"",
        f.status,
        t.bytes_out.get(),
        t.bytes_in.get(),
        conn_name(t),
        t.term.get().code()
    );
    escape_json(out, &t.request_line.borrow());
    out.extend_from_slice(b"\"}\n");
}

/// Printable ASCII as is; `"` and `\` escaped; anything else as `\xHH`.
fn escape_text(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0x20..=0x7e => out.push(b),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

/// A JSON string body: `"`, `\` and control bytes escaped; bytes over 0x7e as `\u00HH`
/// (a request target is bytes, not necessarily UTF-8).
fn escape_json(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0x20..=0x7e => out.push(b),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `12/Mar/2025:10:11:12.345` (HAProxy's, in UTC) or, for JSON, RFC 3339
/// `2025-03-12T10:11:12.345Z`, with the text up to the second from `texts` while the
/// second lasts.
fn write_date_cached(out: &mut Vec<u8>, texts: &mut Texts, now: SystemTime, rfc3339: bool) {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    push_cached(out, &mut texts.date[usize::from(rfc3339)], secs, |o| {
        write_seconds(o, secs, rfc3339)
    });
    push_millis(out, d.subsec_millis(), rfc3339);
}

/// `.345`, and RFC 3339's `Z`.
fn push_millis(out: &mut Vec<u8>, milli: u32, rfc3339: bool) {
    let digit = |v: u32| b'0' + (v % 10) as u8;
    out.extend_from_slice(&[b'.', digit(milli / 100), digit(milli / 10), digit(milli)]);
    if rfc3339 {
        out.push(b'Z');
    }
}

/// The date up to the second: `12/Mar/2025:10:11:12` or `2025-03-12T10:11:12`.
fn write_seconds(out: &mut Vec<u8>, secs: u64, rfc3339: bool) {
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let (hh, mm, ss) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let _ = if rfc3339 {
        write!(out, "{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}")
    } else {
        let mon = MONTHS[(m as usize).clamp(1, 12) - 1];
        write!(out, "{day:02}/{mon}/{y:04}:{hh:02}:{mm:02}:{ss:02}")
    };
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31); Howard Hinnant's
/// algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Front;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_000), (2022, 1, 8));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for (rfc3339, text) in [
            (false, "12/Mar/2025:10:11:12.345"),
            (true, "2025-03-12T10:11:12.345Z"),
        ] {
            let mut out = Vec::new();
            let at = UNIX_EPOCH + Duration::from_millis(1_741_774_272_345);
            write_date_cached(&mut out, &mut Texts::default(), at, rfc3339);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn cached_texts_follow_the_second_the_client_and_the_server() {
        let mut texts = Texts::default();
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let date = |texts: &mut Texts, ms: u64, rfc: bool| {
            let mut out = Vec::new();
            write_date_cached(&mut out, texts, at(ms), rfc);
            String::from_utf8(out).unwrap()
        };
        // In order: a second, the same second again (the cached part, new milliseconds),
        // the other format (its own cache), the next second, and across a year.
        for (ms, rfc3339, text) in [
            (1_741_774_272_345, false, "12/Mar/2025:10:11:12.345"),
            (1_741_774_272_009, false, "12/Mar/2025:10:11:12.009"),
            (1_741_774_272_999, true, "2025-03-12T10:11:12.999Z"),
            (1_741_774_273_000, false, "12/Mar/2025:10:11:13.000"),
            (1_767_225_599_500, true, "2025-12-31T23:59:59.500Z"),
            (1_767_225_600_001, true, "2026-01-01T00:00:00.001Z"),
            (1_767_225_600_001, false, "01/Jan/2026:00:00:00.001"),
        ] {
            assert_eq!(date(&mut texts, ms, rfc3339), text, "at {ms} ms");
        }
        // Addresses: each line has its own, whatever the previous line's was.
        for (ip, server) in [
            ("10.0.0.1", "127.0.0.1:9000"),
            ("10.0.0.1", "127.0.0.1:9000"),
            ("::1", "127.0.0.1:9001"),
            ("10.0.0.2", "[::1]:9001"),
        ] {
            let mut out = Vec::new();
            push_client(&mut out, &mut texts, ip.parse().unwrap());
            out.push(b' ');
            push_server(&mut out, &mut texts, server.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), format!("{ip} {server}"));
        }
    }

    #[test]
    fn lines_escape_what_the_client_sent() {
        let t = Trace::new(Front::Http1);
        t.begin(
            "10.0.0.1".parse().unwrap(),
            Instant::now(),
            b"GET",
            b"/a\"b\\\x01\xff",
            "HTTP/1.1",
        );
        let facts = LineFacts {
            status: 404,
            done: Instant::now(),
            backend: None,
            server: None,
        };
        let mut out = Vec::new();
        write_text(&mut out, &mut Texts::default(), 3, &t, &facts);
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("10.0.0.1 ["), "{line}");
        assert!(
            line.ends_with(
                " 3 h1 -/<NOSRV> 0/-1/-1/-1/0 404 0 - -- \"GET /a\\\"b\\\\\\x01\\xff HTTP/1.1\"\n"
            ),
            "{line}"
        );
        let mut out = Vec::new();
        write_json(&mut out, &mut Texts::default(), 3, &t, &facts);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["request"], "GET /a\"b\\\u{1}\u{ff} HTTP/1.1");
        assert_eq!(v["status"], 404);
        assert!(v["tw_ms"].is_null() && v["backend"].is_null());
    }

    /// Tq and the lease wait are computed from their stamps when a line is written (not
    /// per request): Tq from the start of the wait for the head to its end, Tw the wait
    /// for a connection less the connect, Tc the connect, Ta all of it.
    #[test]
    fn the_timers_come_from_the_stamps_the_trace_keeps() {
        let ms = Duration::from_millis;
        let t = Trace::new(Front::Http1);
        let began = Instant::now();
        t.begin(
            "10.0.0.1".parse().unwrap(),
            began - ms(120),
            b"GET",
            b"/",
            "HTTP/1.1",
        );
        t.leased_as(
            crate::upstream::Acquired::Connected(ms(30)),
            Instant::now() - ms(80),
        );
        let done = t.received.get() + ms(300);
        let [tq, tw, tc, tr, ta] = timers(&t, done);
        let near = |got: Option<u128>, want: u128| {
            let got = got.expect("reached");
            assert!((want..want + 10).contains(&got), "{got} ms, want {want}");
        };
        near(tq, 120);
        near(tw, 50);
        assert_eq!(tc, Some(30));
        assert_eq!(tr, None, "no first byte yet");
        near(ta, 420);
        let untouched = Trace::new(Front::Http1);
        assert_eq!(
            untouched.tq(),
            Duration::ZERO,
            "a trace never begun waited for nothing"
        );
    }

    #[test]
    fn a_full_channel_drops_and_counts() {
        let hub = Hub::new(Target::Stdout, Format::Text);
        let log = hub.shard_log(0);
        let t = Trace::new(Front::Http1);
        t.begin(
            "10.0.0.1".parse().unwrap(),
            Instant::now(),
            b"GET",
            b"/",
            "HTTP/1.1",
        );
        let facts = LineFacts {
            status: 200,
            done: Instant::now(),
            backend: Some("b"),
            server: Some("127.0.0.1:1".parse().unwrap()),
        };
        // Nobody receives: the first QUEUE_BATCHES batches queue, then batches drop.
        let mut dropped = 0;
        let mut logged = 0;
        while dropped == 0 {
            dropped += log.log(&t, &facts);
            logged += 1;
            assert!(logged < 1_000_000, "never dropped");
        }
        assert!(dropped > 0 && dropped < logged);
        // The buffer's allocation is kept and it logs on.
        assert_eq!(log.log(&t, &facts), 0);
    }
}
