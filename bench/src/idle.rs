//! `ringway-bench idle`: what an idle keep-alive connection costs a proxy in memory.
//!
//! [`run`] reads the resident set (`VmRSS`) of a process (the proxy, by `--pid`), opens
//! `--conns` keep-alive connections to it, sends one request on each and reads the whole
//! response, so every connection has served a request and now sits idle; then it reads
//! the resident set again once it has settled and reports the growth per connection. With
//! `--concurrent` every request is written before any response is read: a proxy in front
//! of a slow path (`/delay/MS` on `ringway-origin`) then needs one backend connection per
//! request, and holds that many idle pooled backend connections afterwards. HTTP/1.1 or
//! HTTP/2 with prior knowledge (`--http2`, one stream per connection).
//!
//! Plain blocking sockets on the calling thread: the figure of interest is the proxy's,
//! and a sequential client keeps the measurement simple. Nothing here panics on what a
//! peer sends; a broken response is an error that names the connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::load::config::Target;

/// What one idle run does.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    pub target: Target,
    pub conns: usize,
    /// The process whose resident set is measured (none: the connections are only held).
    pub pid: Option<u32>,
    /// Write every request before reading any response.
    pub concurrent: bool,
    pub http2: bool,
    /// Connect, write and read timeout for each connection.
    pub timeout: Duration,
}

/// What one idle run measured.
#[derive(Debug, Clone)]
pub struct IdleReport {
    pub conns: usize,
    /// Resident set before the first connection, in bytes (0 without a pid).
    pub rss_before: u64,
    /// Resident set with every connection open and idle, in bytes.
    pub rss_after: u64,
}

impl IdleReport {
    /// Growth of the resident set per idle connection, in bytes.
    pub fn per_conn(&self) -> f64 {
        if self.conns == 0 {
            return 0.0;
        }
        (self.rss_after as f64 - self.rss_before as f64) / self.conns as f64
    }

    pub fn to_json(&self) -> String {
        serde_json::json!({
            "conns": self.conns,
            "rss_before": self.rss_before,
            "rss_after": self.rss_after,
            "per_conn": self.per_conn().round(),
        })
        .to_string()
    }

    pub fn print_human(&self) {
        println!(
            "{} idle connections: RSS {} KiB -> {} KiB, {:.0} bytes per connection",
            self.conns,
            self.rss_before / 1024,
            self.rss_after / 1024,
            self.per_conn()
        );
    }
}

/// Connections held open and idle; dropping it closes them all.
pub struct Held {
    pub report: IdleReport,
    conns: Vec<TcpStream>,
}

impl Held {
    /// Closes every connection now (the proxy sees EOF on each).
    pub fn close(self) {
        for c in &self.conns {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// The resident set of `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("--pid {pid}: {path}"))?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .with_context(|| format!("--pid {pid}: no VmRSS in {path} (a kernel thread?)"))?;
    Ok(kib * 1024)
}

/// The resident set once it stops moving: read every 100 ms until two reads in a row
/// differ by less than 0.5 %, for at most 3 s (the last read then).
pub fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = rss_of(pid)?;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = rss_of(pid)?;
        if now.abs_diff(last) * 200 < last.max(1) || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// Opens the connections, serves one request on each, measures, and hands them back
/// still open.
pub fn run(cfg: &IdleConfig) -> anyhow::Result<Held> {
    if cfg.conns == 0 {
        bail!("--conns must be at least 1");
    }
    let rss_before = match cfg.pid {
        Some(pid) => settled_rss(pid)?,
        None => 0,
    };
    let request = if cfg.http2 {
        h2_request(&cfg.target)
    } else {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringway-bench idle\r\n\r\n",
            cfg.target.path, cfg.target.authority
        )
        .into_bytes()
    };
    let mut conns = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        let s = TcpStream::connect_timeout(&cfg.target.addr, cfg.timeout).with_context(|| {
            format!(
                "connection {i} of {}: connect to {} (is `ulimit -n` high enough?)",
                cfg.conns, cfg.target.addr
            )
        })?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(cfg.timeout))?;
        s.set_write_timeout(Some(cfg.timeout))?;
        conns.push(s);
        let s = conns.last_mut().context("just pushed")?;
        s.write_all(&request)
            .with_context(|| format!("connection {i}: sending the request"))?;
        if !cfg.concurrent {
            read_one(s, cfg.http2).with_context(|| format!("connection {i}"))?;
        }
    }
    if cfg.concurrent {
        for (i, s) in conns.iter_mut().enumerate() {
            read_one(s, cfg.http2).with_context(|| format!("connection {i}"))?;
        }
    }
    let rss_after = match cfg.pid {
        Some(pid) => settled_rss(pid)?,
        None => 0,
    };
    Ok(Held {
        report: IdleReport {
            conns: cfg.conns,
            rss_before,
            rss_after,
        },
        conns,
    })
}

fn read_one(s: &mut TcpStream, http2: bool) -> anyhow::Result<()> {
    if http2 {
        h2_read_response(s)
    } else {
        h1_read_response(s)
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; it must keep the
/// connection open.
fn h1_read_response(s: &mut TcpStream) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).context("reading the response")?;
        if n == 0 {
            bail!("the server closed before a complete response");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => bail!("bad response head: {e}"),
        };
        let mut length = None;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok());
            }
            if h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close") {
                bail!("the server closes the connection (status {:?})", resp.code);
            }
        }
        let Some(length) = length else {
            bail!("the response has no Content-Length (idle mode reads only those)");
        };
        let mut have = buf.len() - head_len;
        while have < length {
            let n = s.read(&mut chunk).context("reading the response body")?;
            if n == 0 {
                bail!("the server closed inside the response body");
            }
            have += n;
        }
        return Ok(());
    }
}

const FRAME_DATA: u8 = 0;
const FRAME_HEADERS: u8 = 1;
const FRAME_RST: u8 = 3;
const FRAME_SETTINGS: u8 = 4;
const FRAME_PING: u8 = 6;
const FRAME_GOAWAY: u8 = 7;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK string literal (no Huffman); short strings only.
fn hpack_str(s: &str, out: &mut Vec<u8>) {
    let b = s.as_bytes();
    // A 7-bit prefixed length; longer values continue in 7-bit groups.
    let mut n = b.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(b);
}

/// The client preface, an empty SETTINGS frame and a GET on stream 1 (END_STREAM).
fn h2_request(t: &Target) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(FRAME_SETTINGS, 0, 0, &[], &mut out);
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http (static table)
    block.push(0x04); // :path, literal without indexing, name from the static table
    hpack_str(&t.path, &mut block);
    block.push(0x01); // :authority, the same
    hpack_str(&t.authority, &mut block);
    frame(
        FRAME_HEADERS,
        0x4 | FLAG_END_STREAM, // END_HEADERS | END_STREAM
        1,
        &block,
        &mut out,
    );
    out
}

/// Reads frames until stream 1 ends, acknowledging the server's SETTINGS (and PINGs) so
/// the connection stays healthy.
fn h2_read_response(s: &mut TcpStream) -> anyhow::Result<()> {
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).context("reading an HTTP/2 frame")?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if len > 1 << 24 {
            bail!("an HTTP/2 frame of {len} bytes");
        }
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload)
            .context("reading an HTTP/2 frame payload")?;
        match kind {
            FRAME_SETTINGS if flags & FLAG_ACK == 0 => {
                let mut ack = Vec::new();
                frame(FRAME_SETTINGS, FLAG_ACK, 0, &[], &mut ack);
                s.write_all(&ack).context("acknowledging SETTINGS")?;
            }
            FRAME_PING if flags & FLAG_ACK == 0 => {
                let mut pong = Vec::new();
                frame(FRAME_PING, FLAG_ACK, 0, &payload, &mut pong);
                s.write_all(&pong).context("answering a PING")?;
            }
            FRAME_GOAWAY => bail!("the server sent GOAWAY"),
            FRAME_RST if stream == 1 => bail!("the server reset the stream"),
            FRAME_DATA | FRAME_HEADERS if stream == 1 && flags & FLAG_END_STREAM != 0 => {
                return Ok(());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_lengths() {
        let mut out = Vec::new();
        hpack_str("/a", &mut out);
        assert_eq!(out, b"\x02/a");
        let long = "x".repeat(300);
        let mut out = Vec::new();
        hpack_str(&long, &mut out);
        // 300 = 127 + 173; 173 = 0x2d + 128 * 1.
        assert_eq!(&out[..3], &[127, 0xad, 0x01]);
        assert_eq!(out.len(), 3 + 300);
    }

    #[test]
    fn per_conn_is_growth_over_count() {
        let r = IdleReport {
            conns: 4,
            rss_before: 1000,
            rss_after: 5000,
        };
        assert_eq!(r.per_conn(), 1000.0);
    }
}
