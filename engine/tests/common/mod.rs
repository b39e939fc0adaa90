//! Shared helpers of ringway's end-to-end tests: an in-process origin, the `ringway`
//! binary started on ephemeral ports (killed with SIGTERM on drop), a raw HTTP/1.1
//! client over `std::net::TcpStream` that can send any bytes and read one response at a
//! time, `/metrics` readers, and polling with a deadline (never sleep-to-wait).
//!
//! Each test file includes this with `mod common;`, so not every helper is used by every
//! file.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use ringway_bench::origin::{Origin, OriginConfig, OriginStats};
use sha2::{Digest, Sha256};

/// Read/write timeout of raw client sockets: a hung proxy fails a test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the proxy may take to print its ports (the machine may be busy building).
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a stopping proxy may take to exit after SIGTERM before it is killed.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

pub const BIN: &str = env!("CARGO_BIN_EXE_ringway");

// ---------------------------------------------------------------------------------------
// Origin

/// An in-process origin with one unpinned shard on an ephemeral port.
pub fn origin() -> Origin {
    origin_with(OriginConfig::default())
}

pub fn origin_with(cfg: OriginConfig) -> Origin {
    Origin::start(cfg).expect("origin starts")
}

/// A `127.0.0.1` port nothing listens on (bound, then closed).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

// ---------------------------------------------------------------------------------------
// The proxy process

/// A running `ringway` process. Dropping it sends SIGTERM and waits (SIGKILL after
/// [`STOP_DEADLINE`]); when the test is panicking, the proxy's stderr is printed.
pub struct Proxy {
    child: Option<Child>,
    status: Option<ExitStatus>,
    /// The first listener.
    pub addr: SocketAddr,
    /// Every listener, in the order printed.
    pub listeners: Vec<SocketAddr>,
    /// Every TLS listener (`--listen-tls`), in the order printed.
    pub tls_listeners: Vec<SocketAddr>,
    pub admin: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
}

fn has_flag(args: &[&str], flag: &str) -> bool {
    args.iter()
        .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
}

impl Proxy {
    /// Starts `ringway` with `args`, adding what a test needs unless given:
    /// `--listen 127.0.0.1:0`, `--admin 127.0.0.1:0`, `--shards 1` (when neither `--shards`
    /// nor `--cpus` is given) and `--grace 2s`.
    pub fn start(args: &[&str]) -> Proxy {
        Proxy::start_exact(&Proxy::with_defaults(args))
    }

    /// Like [`Proxy::start`], with the proxy's environment changed by `env`'s
    /// arguments `vars`: `NAME=value` sets, `-u NAME` removes (e.g.
    /// `GLOMMIO_RECV_BUFFER_RING=off`).
    pub fn start_with_env(vars: &[&str], args: &[&str]) -> Proxy {
        let mut pre: Vec<&str> = vars.to_vec();
        pre.push(BIN);
        Proxy::start_in(Some(("env", pre)), &Proxy::with_defaults(args))
    }

    /// `args` with a listener, an admin listener, one shard and a 2 s grace unless given.
    fn with_defaults<'a>(args: &[&'a str]) -> Vec<&'a str> {
        let mut full: Vec<&str> = args.to_vec();
        if !has_flag(args, "--listen") {
            full.extend(["--listen", "127.0.0.1:0"]);
        }
        if !has_flag(args, "--admin") {
            full.extend(["--admin", "127.0.0.1:0"]);
        }
        if !has_flag(args, "--shards") && !has_flag(args, "--cpus") {
            full.extend(["--shards", "1"]);
        }
        if !has_flag(args, "--grace") {
            full.extend(["--grace", "2s"]);
        }
        full
    }

    /// Starts `ringway` with exactly `args` (which must include `--admin`).
    pub fn start_exact(args: &[&str]) -> Proxy {
        Proxy::start_once(args)
    }

    /// Like [`Proxy::start`], under `prlimit --nofile=N:N` (a real fd limit).
    pub fn start_with_nofile(nofile: u64, args: &[&str]) -> Proxy {
        let limit = format!("--nofile={nofile}:{nofile}");
        let mut full = vec![
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--grace",
            "2s",
        ];
        full.extend_from_slice(args);
        Proxy::start_in(Some(("prlimit", vec![limit.as_str(), BIN])), &full)
    }

    fn start_once(args: &[&str]) -> Proxy {
        Proxy::start_in(None, args)
    }

    /// Starts `ringway`, or `wrapper.0 wrapper.1... ringway` (a command that execs it).
    fn start_in(wrapper: Option<(&str, Vec<&str>)>, args: &[&str]) -> Proxy {
        let mut cmd = match &wrapper {
            Some((w, pre)) => {
                let mut c = Command::new(w);
                c.args(pre);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringway");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let mut err = child.stderr.take().unwrap();
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match err.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
        let (tx, rx) = mpsc::channel::<String>();
        {
            let out = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                // Keeps draining stdout for the process's life so it never blocks on it.
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    let _ = tx.send(line);
                }
            });
        }
        let mut proxy = Proxy {
            child: Some(child),
            status: None,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            listeners: Vec::new(),
            tls_listeners: Vec::new(),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
            stderr,
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        proxy
                            .listeners
                            .push(a.trim().parse().expect("listener address"));
                    } else if let Some(a) = line.strip_prefix("listening tls on ") {
                        proxy
                            .tls_listeners
                            .push(a.trim().parse().expect("TLS listener address"));
                    } else if let Some(a) = line.strip_prefix("admin on ") {
                        proxy.admin = a.trim().parse().expect("admin address");
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = proxy.try_status() {
                        panic!(
                            "ringway {args:?} exited with {status} before listening; stderr:\n{}",
                            proxy.stderr()
                        );
                    }
                    if left.is_zero() {
                        panic!(
                            "ringway {args:?} did not print its ports within {START_DEADLINE:?}; \
                             stderr:\n{}",
                            proxy.stderr()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = proxy.wait_exit(Duration::from_secs(5));
                    panic!(
                        "ringway {args:?} closed stdout before printing its ports (exit {status:?}); \
                         stderr:\n{}",
                        proxy.stderr()
                    );
                }
            }
        }
        assert!(
            !proxy.listeners.is_empty() || !proxy.tls_listeners.is_empty(),
            "no `listening on` line"
        );
        proxy.addr = proxy
            .listeners
            .first()
            .or(proxy.tls_listeners.first())
            .copied()
            .expect("a listener");
        proxy
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("proxy process")
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(s)) = c.try_wait() {
                    self.status = Some(s);
                }
            }
        }
        self.status
    }

    pub fn is_alive(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Asserts the process still runs and never reported a panic.
    pub fn assert_healthy(&mut self) {
        let status = self.try_status();
        let err = self.stderr();
        assert!(
            status.is_none(),
            "ringway exited ({status:?}); stderr:\n{err}"
        );
        assert!(
            !err.contains("panicked"),
            "ringway panicked; stderr:\n{err}"
        );
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// Waits for the process to exit, polling until `within` has passed.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit status (SIGKILL and a panic if it does not exit in time).
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(s) = self.try_status() {
            return s;
        }
        self.signal(libc::SIGTERM);
        match self.wait_exit(STOP_DEADLINE) {
            Some(s) => s,
            None => {
                self.kill();
                panic!(
                    "ringway did not exit within {STOP_DEADLINE:?} of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            if let Ok(s) = c.wait() {
                self.status = Some(s);
            }
        }
    }

    /// The proxy's resident set size in bytes (`VmRSS` of `/proc/PID/status`).
    pub fn rss(&self) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let line = text
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS line");
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("VmRSS value");
        kib * 1024
    }

    /// The `/metrics` text of this proxy.
    pub fn metrics(&self) -> String {
        metrics(self.admin)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.try_status().is_none() && self.child.is_some() {
            let _ = self.signal_quiet(libc::SIGTERM);
            if self.wait_exit(STOP_DEADLINE).is_none() {
                self.kill();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- ringway stderr (exit {:?}) ---\n{}\n--- end ---",
                self.status,
                self.stderr()
            );
        }
    }
}

impl Proxy {
    fn signal_quiet(&self, sig: libc::c_int) -> bool {
        let Some(c) = self.child.as_ref() else {
            return false;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as libc::pid_t, sig) == 0 }
    }
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1 client

/// One response as a client saw it.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Interim (1xx) statuses received before this response.
    pub interim: Vec<u16>,
    /// The body was chunked on the wire.
    pub chunked: bool,
    /// The body was delimited by the connection closing.
    pub until_close: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A numeric header (`X-Origin-Conn`, `X-Origin-Req`, `Content-Length`).
    pub fn num(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number in {:?}", self.headers))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Connection: close` was sent.
    pub fn says_close(&self) -> bool {
        self.headers_named("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

/// A client connection that sends raw bytes and reads responses one at a time.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Like [`Conn::connect`], but a refused connect is an error to look at, not a panic.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 << 10),
            pos: 0,
        })
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to proxy");
    }

    /// `GET path` with `Host: test` and keep-alive, and its response.
    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }

    /// Sends one request with `Host: test` (unless `headers` has a Host), the given
    /// headers and, when `body` is given, a `Content-Length` body; reads the response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let mut req = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            req.extend_from_slice(b"Host: test\r\n");
        }
        for (n, v) in headers {
            req.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        if let Some(b) = body {
            req.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        if let Some(b) = body {
            req.extend_from_slice(b);
        }
        self.send(&req);
        self.read_response(method == "HEAD")
    }

    /// Reads more input; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > (32 << 10) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let at = self.buf.len();
        self.buf.resize(at + (64 << 10), 0);
        match self.stream.read(&mut self.buf[at..]) {
            Ok(n) => {
                self.buf.truncate(at + n);
                Ok(n)
            }
            Err(e) => {
                self.buf.truncate(at);
                Err(e)
            }
        }
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.pos..self.pos + i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let s = String::from_utf8_lossy(line).into_owned();
                self.pos += i + 1;
                return Ok(s);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-line",
                ));
            }
        }
    }

    /// Passes exactly `n` body bytes to `sink`.
    fn read_n(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            if self.pos == self.buf.len() && self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed with {n} body bytes missing"),
                ));
            }
            let take = ((self.buf.len() - self.pos) as u64).min(n) as usize;
            sink(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// Reads one response (skipping interim 1xx ones) and collects its body.
    /// `head_request`: the request was HEAD, so the response has no body.
    pub fn read_response(&mut self, head_request: bool) -> Response {
        let mut body = Vec::new();
        let mut r = self
            .read_response_with(head_request, &mut |d| body.extend_from_slice(d))
            .unwrap_or_else(|e| panic!("reading a response: {e}"));
        r.body = body;
        r
    }

    /// Like [`Conn::read_response`] but returns errors instead of panicking.
    pub fn try_read_response(&mut self, head_request: bool) -> io::Result<Response> {
        let mut body = Vec::new();
        let mut r = self.read_response_with(head_request, &mut |d| body.extend_from_slice(d))?;
        r.body = body;
        Ok(r)
    }

    /// Reads only a response head (interim ones included, not skipped).
    pub fn read_head(&mut self) -> io::Result<Response> {
        let status_line = self.read_line()?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(io::Error::other(format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| io::Error::other(format!("bad header line {line:?}")))?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        Ok(Response {
            status,
            reason,
            headers,
            ..Response::default()
        })
    }

    /// Reads one response, streaming its body (de-chunked) into `sink`.
    pub fn read_response_with(
        &mut self,
        head_request: bool,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Response> {
        let mut interim = Vec::new();
        let mut r = loop {
            let r = self.read_head()?;
            if (100..200).contains(&r.status) && r.status != 101 {
                interim.push(r.status);
                continue;
            }
            break r;
        };
        r.interim = interim;
        if head_request || r.status == 204 || r.status == 304 || r.status < 200 {
            return Ok(r);
        }
        let te = r
            .header("transfer-encoding")
            .map(|s| s.to_ascii_lowercase());
        if te.as_deref().is_some_and(|t| t.contains("chunked")) {
            r.chunked = true;
            loop {
                let line = self.read_line()?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16)
                    .map_err(|_| io::Error::other(format!("bad chunk size line {line:?}")))?;
                if size == 0 {
                    // Trailers until the empty line.
                    while !self.read_line()?.is_empty() {}
                    break;
                }
                self.read_n(size, sink)?;
                let end = self.read_line()?;
                if !end.is_empty() {
                    return Err(io::Error::other(format!(
                        "chunk not followed by CRLF: {end:?}"
                    )));
                }
            }
        } else if let Some(len) = r.header("content-length") {
            let len: u64 = len
                .trim()
                .parse()
                .map_err(|_| io::Error::other(format!("bad Content-Length {len:?}")))?;
            self.read_n(len, sink)?;
        } else {
            r.until_close = true;
            loop {
                if self.pos < self.buf.len() {
                    sink(&self.buf[self.pos..]);
                    self.pos = self.buf.len();
                }
                if self.fill()? == 0 {
                    break;
                }
            }
        }
        Ok(r)
    }

    /// Bytes received beyond the responses read so far (waits at most `within` for some).
    pub fn unread_bytes(&mut self, within: Duration) -> Vec<u8> {
        if self.pos == self.buf.len() {
            self.stream.set_read_timeout(Some(within)).unwrap();
            let _ = self.fill();
            self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        }
        let rest = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        rest
    }

    /// Whether the peer closed the connection (EOF or reset) within `within`, with no
    /// further bytes. Panics if bytes arrive.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        assert_eq!(
            self.pos,
            self.buf.len(),
            "unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&self.buf[self.pos..])
        );
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut b = [0u8; 1024];
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(n) => panic!(
                    "expected a close, got bytes: {:?}",
                    String::from_utf8_lossy(&b[..n])
                ),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

// ---------------------------------------------------------------------------------------
// Metrics

/// `GET /metrics` from the admin address.
pub fn metrics(admin: SocketAddr) -> String {
    let mut s = TcpStream::connect(admin).unwrap_or_else(|e| panic!("connect admin {admin}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read /metrics");
    let text = String::from_utf8(raw).expect("utf-8 metrics");
    let (head, body) = text.split_once("\r\n\r\n").expect("metrics response head");
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "metrics answered {head:?}"
    );
    body.to_string()
}

/// The value of one sample, named with its labels, e.g.
/// `ringway_requests_total{shard="0"}`. `shard="all"`, or no `shard` label at all, sums
/// the per-shard series whose other labels are the ones given (ringway exports no total
/// series: totals are what PromQL's `sum()` gives). Panics when no sample matches.
pub fn metric(text: &str, name_with_labels: &str) -> u64 {
    try_metric(text, name_with_labels).unwrap_or_else(|| {
        let name = name_with_labels.split('{').next().unwrap();
        let similar: Vec<&str> = text.lines().filter(|l| l.starts_with(name)).collect();
        panic!("no sample {name_with_labels}; samples of {name}: {similar:#?}")
    })
}

/// `name{a="1",b="2"}` as the name and its labels (values unescaped only as far as
/// ringway's labels need: they hold no quotes).
pub fn parse_series(s: &str) -> Option<(&str, Vec<(&str, &str)>)> {
    let Some((name, rest)) = s.split_once('{') else {
        return Some((s, Vec::new()));
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    for pair in body.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        labels.push((k, v.strip_prefix('"')?.strip_suffix('"')?));
    }
    Some((name, labels))
}

/// One sample: its name, its labels and its value.
pub type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// Every sample of `text`.
pub fn samples(text: &str) -> Vec<Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = parse_series(series)?;
            Some((name, labels, value.trim().parse().ok()?))
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include every one of `want`.
pub fn sum_metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, labels, _)| *n == name && want.iter().all(|w| labels.contains(w)))
        .map(|(_, _, v)| v)
        .sum()
}

pub fn try_metric(text: &str, name_with_labels: &str) -> Option<u64> {
    let (name, want) = parse_series(name_with_labels)?;
    // `cpu` follows `shard` on pinned shards: matching ignores it unless asked for.
    let other = |labels: &[(&str, &str)], skip_shard: bool| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = labels
            .iter()
            .filter(|(k, _)| *k != "cpu" && !(skip_shard && *k == "shard"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    };
    let all = want.contains(&("shard", "all")) || !want.iter().any(|(k, _)| *k == "shard");
    let want_cpu = want.iter().find(|(k, _)| *k == "cpu").map(|(_, v)| *v);
    let wanted = other(&want, all);
    let mut found = None;
    for (n, labels, v) in samples(text) {
        if n != name || other(&labels, all) != wanted {
            continue;
        }
        if let Some(cpu) = want_cpu {
            if !labels.contains(&("cpu", cpu)) {
                continue;
            }
        }
        if !all {
            return Some(v as u64);
        }
        *found.get_or_insert(0.0) += v;
    }
    found.map(|v| v as u64)
}

// ---------------------------------------------------------------------------------------
// Waiting

/// Polls `f` every 10 ms until it returns `Some`, panicking after `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` until it holds, panicking after `within`.
pub fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(within, what, || f().then_some(()))
}

// ---------------------------------------------------------------------------------------
// curl

/// Runs `curl -sS --max-time 120 ARGS` and returns its output (whatever the status).
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "120"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

/// Runs curl and asserts it succeeded; returns stdout.
pub fn curl_ok(args: &[&str]) -> Vec<u8> {
    let out = curl(args);
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------------------------------
// Bodies

/// The origin's body pattern: byte `i` is `i % 251`.
pub fn pattern(len: usize) -> Vec<u8> {
    ringway_bench::origin::payload::pattern(len)
}

/// SHA-256 of the first `len` pattern bytes, computed without holding them all.
pub fn pattern_sha256(len: u64) -> [u8; 32] {
    // A multiple of the period, so each block continues the pattern.
    let block = pattern(251 * 256);
    let mut h = Sha256::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        h.update(&block[..n]);
        left -= n as u64;
    }
    h.finalize().into()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A unique temporary file path for this test process. The counter comes before the tag,
/// so the path keeps its uniqueness under `with_extension` (a tag such as `answers.json`
/// once ended up as `…-answers.json-3`, whose "extension" is `json-3`: every test's
/// `with_extension("tmp")` scratch file was the same file, and parallel tests renamed each
/// other's answers away).
pub fn temp_path(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("ringway-test-{}-{n}-{tag}", std::process::id()))
}

/// Removes a file when dropped.
pub struct TempFile(pub std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh temporary directory for this test process, removed with what it holds when
/// dropped (nginx, HAProxy and certificate directories once stayed behind in /tmp, a few
/// hundred per CI run).
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = temp_path(tag);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// nginx as an HTTP/2 (h2c) origin that is not ours

/// nginx with one `listen ... http2` (prior knowledge) server that answers every request
/// with `tok=$arg_t host=$host`, so each answer names the request it belongs to, and a
/// `stub_status` page for its connection counts.
pub struct NginxH2c {
    child: Child,
    pub port: u16,
    queries: std::cell::Cell<u64>,
    _dir: TempDir,
}

impl NginxH2c {
    /// `keepalive_requests`: streams per connection before nginx sends GOAWAY.
    pub fn start(name: &str, keepalive_requests: u32) -> NginxH2c {
        let dir = TempDir::new(&format!("ngx-{name}"));
        let port = closed_port();
        let d = dir.to_string_lossy().to_string();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             keepalive_requests {keepalive_requests};\n keepalive_timeout 300s;\n\
             server {{\n  listen 127.0.0.1:{port} http2;\n\
             location = /nginx_status {{ stub_status; }}\n\
             location / {{ default_type text/plain; return 200 \"tok=$arg_t host=$host\\n\"; }}\n }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx config");
        let child = Command::new("nginx")
            .args([
                "-p",
                &d,
                "-c",
                &conf_path.to_string_lossy(),
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is needed for this test (installed by .ci/run)");
        wait_until(Duration::from_secs(10), "nginx to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        NginxH2c {
            child,
            port,
            queries: std::cell::Cell::new(1),
            _dir: dir,
        }
    }

    pub fn backend(&self) -> String {
        format!("h2c://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections nginx accepted so far, not counting our probes and status queries.
    pub fn accepts(&self) -> u64 {
        self.counts().0
    }

    /// (connections accepted so far, connections open now), not counting our probes and
    /// status queries.
    pub fn counts(&self) -> (u64, u64) {
        let url = format!("http://127.0.0.1:{}/nginx_status", self.port);
        let body = curl_ok(&["--http2-prior-knowledge", &url]);
        self.queries.set(self.queries.get() + 1);
        let text = String::from_utf8_lossy(&body).to_string();
        let active: u64 = text
            .lines()
            .next()
            .and_then(|l| l.rsplit(' ').find(|w| !w.is_empty()))
            .and_then(|w| w.trim().parse().ok())
            .unwrap_or_else(|| panic!("stub_status active line in {text}"));
        let line = text.lines().nth(2).expect("stub_status numbers");
        let accepts: u64 = line
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("stub_status accepts in {text}"));
        // This status query is one of the open connections.
        (accepts - self.queries.get(), active.saturating_sub(1))
    }
}

impl Drop for NginxH2c {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client loop on one keep-alive connection (reopened after a failure or a
/// `Connection: close`), sending `GET path` every 2 ms until stopped (at most 90 s):
/// counts answers by status and transport failures, and says why each failure was one.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    pub fn start(addr: SocketAddr, path: &'static str) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let mut why = Vec::new();
            let mut conn = Conn::connect(addr);
            let deadline = Instant::now() + Duration::from_secs(90);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                conn.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
                match conn.try_read_response(false) {
                    Ok(r) => {
                        if r.status == 200 {
                            o.fetch_add(1, Ordering::Relaxed);
                        } else {
                            f.fetch_add(1, Ordering::Relaxed);
                            why.push(format!("status {}", r.status));
                        }
                        if r.says_close() {
                            conn = Conn::connect(addr);
                        }
                    }
                    Err(e) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        why.push(format!("io: {e}"));
                        conn = Conn::connect(addr);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            why
        });
        Load {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Answers with status 200 so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the loop; returns (answered 200, failed, why they failed).
    pub fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let why = self
            .thread
            .take()
            .expect("finished once")
            .join()
            .expect("load thread");
        (
            self.ok(),
            self.failed.load(std::sync::atomic::Ordering::Relaxed),
            why,
        )
    }
}

/// Runs `f` on a fresh glommio executor in its own thread and returns its result.
pub fn on_glommio<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("executor starts")
        .join()
        .expect("executor thread")
}

/// The kernel's `TCP_INFO` for a socket (segment counts: `tcpi_segs_in`, `tcpi_data_segs_in`).
pub fn tcp_info(s: &TcpStream) -> libc::tcp_info {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain integers; zero is a valid value for each.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    info
}

/// A connected TCP pair on the current glommio executor: (ours, accepted by glommio;
/// theirs, a plain std socket whose reads give up after `wait`).
pub async fn glommio_pair(wait: Duration) -> (glommio::net::TcpStream, TcpStream) {
    let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let theirs = TcpStream::connect(addr).expect("connect");
    theirs.set_read_timeout(Some(wait)).expect("timeout");
    let ours = listener.accept().await.expect("accept");
    (ours, theirs)
}
