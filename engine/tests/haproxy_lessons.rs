//! End-to-end tests owed to HAProxy's idle-pool bug list (docs/takeover.md, "HAProxy's
//! takeover bugs and the tests that rule them out"), for the failures that are about
//! sockets rather than pool bookkeeping (those are tested in `pool/`):
//!
//! - #11: a connection closed by policy (purge, shutdown) leaves with RST, not FIN, so the
//!   backend sees `ECONNRESET` and no TIME_WAIT piles up;
//! - #16: a backend connection that failed (a garbage answer, a response followed by an
//!   unsolicited one) is never pooled, so it cannot fail the next request;
//! - #6: a connection whose client went away mid-response carries nothing of that session
//!   into the next one;
//! - #13: at the fd limit nothing crashes, every client gets an answer or a clean close,
//!   and the proxy serves normally once the load drops.
//!
//! Each backend here is a `std::net` server run by the test, so what it observes on the
//! socket (EOF, reset, which connection a request arrived on) is the ground truth.

mod common;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// How a backend connection ended, as the backend saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Read returned 0: the proxy closed with FIN.
    Fin,
    /// Read failed with ECONNRESET: the proxy closed with RST.
    Rst,
    /// Still open when the backend gave up waiting.
    StillOpen,
    /// Another read error.
    Other,
}

/// What the test's backend answers to the `n`th request (1-based) on connection `id`.
type Answer = Arc<dyn Fn(u64, u64) -> Vec<u8> + Send + Sync>;

/// A backend run by the test: one thread per connection, numbered from 1, each answering
/// with `answer` and recording how its connection ended.
struct RawBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    ends: Arc<Mutex<BTreeMap<u64, End>>>,
    ended: mpsc::Receiver<(u64, End)>,
}

impl RawBackend {
    fn start(answer: Answer) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let ends = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, ended) = mpsc::channel();
        let (count, ends2) = (accepted.clone(), ends.clone());
        // The threads end with the test process; their sockets die with it.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let id = count.fetch_add(1, Ordering::SeqCst) + 1;
                let (answer, ends, tx) = (answer.clone(), ends2.clone(), tx.clone());
                std::thread::spawn(move || {
                    let end = serve(stream, id, &*answer);
                    ends.lock().unwrap().insert(id, end);
                    let _ = tx.send((id, end));
                });
            }
        });
        RawBackend {
            addr,
            accepted,
            ends,
            ended,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits for connection `id` to end and says how.
    fn wait_end(&self, id: u64, within: Duration) -> End {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.ends.lock().unwrap().get(&id) {
                return *e;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "backend connection {id} still open after {within:?}"
            );
            let _ = self.ended.recv_timeout(left.min(Duration::from_millis(50)));
        }
    }
}

/// Serves one connection until the proxy closes it (or 30 s of silence).
fn serve(mut s: TcpStream, id: u64, answer: &(dyn Fn(u64, u64) -> Vec<u8> + Send + Sync)) -> End {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        // One request: a head (the tests send no bodies).
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) => return End::Fin,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return End::Rst,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return End::StillOpen
                }
                Err(_) => return End::Other,
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        buf.drain(..end + 4);
        n += 1;
        if s.write_all(&answer(id, n)).is_err() {
            return End::Other;
        }
    }
}

/// A well-formed `200` naming the backend connection it came from.
fn ok_from(id: u64) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Conn: {id}\r\n\r\nok").into_bytes()
}

fn server_metric(m: &str, name: &str, server: SocketAddr) -> u64 {
    metric(
        m,
        &format!("ringway_server_{name}{{shard=\"all\",backend=\"default\",server=\"{server}\"}}"),
    )
}

/// Waits until no request is in flight and the pool holds `pooled` connections.
fn settle(proxy: &Proxy, server: SocketAddr, pooled: u64) -> String {
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = proxy.metrics();
        let used = server_metric(&m, "used_cur", server);
        let idle = server_metric(&m, "idle_cur", server) + server_metric(&m, "safe_cur", server);
        if used == 0 && idle == pooled {
            return m;
        }
        last = format!("{last}\nused_cur {used}, idle+safe {idle} (want 0 and {pooled})");
        assert!(
            Instant::now() < deadline,
            "pool did not settle within 5 s:{last}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// #11: evicted connections close with RST

/// HAProxy #11: idle connections it evicted closed with FIN, and TIME_WAIT exhausted the
/// ports. ringway closes every policy close with `SO_LINGER 0`: the backend's read on a
/// purged connection fails with ECONNRESET instead of returning EOF. The same holds for
/// the idle connections closed at shutdown.
#[test]
fn purged_and_shutdown_idle_connections_close_with_rst() {
    let backend = RawBackend::start(Arc::new(|id, _| ok_from(id)));
    let server = backend.addr;
    let spec = server.to_string();
    let mut proxy = Proxy::start(&[
        "--backend",
        &spec,
        "--reuse",
        "always",
        "--pool-purge-delay",
        "200ms",
    ]);

    // Purge: one request pools connection 1; after traffic stops the purge evicts it.
    let r = proxy.connect().get("/");
    assert_eq!((r.status, r.num("x-conn")), (200, 1), "{r:?}");
    assert_eq!(
        backend.wait_end(1, Duration::from_secs(10)),
        End::Rst,
        "a purged idle connection must close with RST (SO_LINGER 0), not FIN"
    );
    let m = settle(&proxy, server, 0);
    assert_eq!(server_metric(&m, "purged_total", server), 1, "{m}");

    // Shutdown: a connection idle in the pool when the proxy stops.
    let mut slow = Proxy::start(&[
        "--backend",
        &spec,
        "--reuse",
        "always",
        "--pool-purge-delay",
        "60s",
    ]);
    let r = slow.connect().get("/");
    assert_eq!((r.status, r.num("x-conn")), (200, 2), "{r:?}");
    settle(&slow, server, 1);
    assert!(slow.terminate().success());
    assert_eq!(
        backend.wait_end(2, Duration::from_secs(10)),
        End::Rst,
        "an idle connection closed at shutdown must close with RST"
    );
    proxy.assert_healthy();
}

// ---------------------------------------------------------------------------------------
// #16: a failed connection is never pooled

/// HAProxy #16: a connection that failed its handshake went into the safe list and was
/// reused forever (permanent 503s). ringway's equivalent: a backend connection whose
/// exchange failed or left it in an unknown state must be closed, never pooled. Two
/// failures, each on connection 1 only: a garbage answer (502), and a good response
/// followed at once by an unsolicited second one (the client gets the first; the
/// connection has bytes nobody asked for). In both cases the next requests go to a new
/// connection, get the real answer, and connection 1 is closed by the proxy.
#[test]
fn a_connection_that_failed_is_never_pooled_again() {
    for (what, first, status) in [
        ("garbage answer", &b"NOT HTTP AT ALL\r\n\r\n"[..], 502),
        (
            "unsolicited second response",
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Conn: 1\r\n\r\nok\
               HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Conn: 1\r\n\r\nstale"[..],
            200,
        ),
    ] {
        let first = first.to_vec();
        let backend = RawBackend::start(Arc::new(move |id, n| {
            if id == 1 && n == 1 {
                first.clone()
            } else {
                ok_from(id)
            }
        }));
        let server = backend.addr;
        let spec = server.to_string();
        let mut proxy = Proxy::start(&["--backend", &spec, "--reuse", "always"]);

        let mut c = proxy.connect();
        let r = c.get("/");
        assert_eq!(r.status, status, "{what}: first answer {r:?}");
        // Whatever happened to the client connection, the backend connection must not be
        // in the pool: nothing idle, nothing in use.
        settle(&proxy, server, 0);
        for i in 0..5 {
            let r = proxy.connect().get("/");
            assert_eq!(
                r.status, 200,
                "{what}: request {i} after the failure: {r:?}"
            );
            assert_eq!(r.body, b"ok", "{what}: request {i} got a stale body");
            assert_eq!(
                r.num("x-conn"),
                2,
                "{what}: request {i} went on the failed connection or a third one"
            );
            settle(&proxy, server, 1);
        }
        assert_eq!(backend.accepted(), 2, "{what}");
        let end = backend.wait_end(1, Duration::from_secs(5));
        assert!(
            matches!(end, End::Fin | End::Rst),
            "{what}: the failed connection was not closed: {end:?}"
        );
        proxy.assert_healthy();
    }
}

// ---------------------------------------------------------------------------------------
// #6: nothing of a client session stays on a pooled connection

/// HAProxy #6: with `http-reuse always`, an H2 connection kept pointing at a freed client
/// session. ringway's backend connections hold no reference to a client (only the socket,
/// the server and a use count), so the remaining risk is the session's *bytes*: a client
/// that goes away mid-response leaves the rest of its body on the backend connection. That
/// connection must be closed, not pooled, or the next client would read the leftover body
/// as its response.
#[test]
fn a_connection_left_mid_response_is_not_reused_by_the_next_client() {
    let origin = origin();
    let server = origin.addr();
    let spec = server.to_string();
    let mut proxy = Proxy::start(&["--backend", &spec, "--reuse", "always"]);

    // 32 MiB is far more than the socket buffers hold: the proxy is still relaying it
    // when the client goes away.
    let mut gone = proxy.connect();
    gone.send(b"GET /size/33554432 HTTP/1.1\r\nHost: test\r\n\r\n");
    let head = gone.read_head().expect("response head");
    assert_eq!(head.status, 200);
    let aborted = head.num("x-origin-conn");
    drop(gone);

    settle(&proxy, server, 0);
    let mut next = proxy.connect();
    for n in [100usize, 70_000] {
        let r = next.get(&format!("/size/{n}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, pattern(n), "leftover bytes of another session");
        assert_ne!(
            r.num("x-origin-conn"),
            aborted,
            "the aborted session's connection was reused"
        );
    }
    wait_until(
        Duration::from_secs(5),
        "the aborted connection closed",
        || origin.stats().connections_open <= 1,
    );
    assert_eq!(origin.stats().connections_total, 2);
    proxy.assert_healthy();
}

// ---------------------------------------------------------------------------------------
// #13: the fd limit

/// The `RLIMIT_NOFILE` that leaves exactly `free` fd numbers unused in process `pid`
/// (new fds take the lowest free number, and glommio's rings sit at high numbers).
fn limit_leaving(pid: u32, free: u64) -> u64 {
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .collect();
    let mut left = free;
    let mut n = 0;
    loop {
        if !open.contains(&n) {
            if left == 0 {
                return n;
            }
            left -= 1;
        }
        n += 1;
    }
}

fn set_nofile(pid: u32, limit: u64) {
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit(2) on our own child; `lim` is a valid rlimit and the old value is
    // not requested (null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", io::Error::last_os_error());
}

/// What one client saw at the fd limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Status(u16),
    /// EOF or reset with no response: a clean close.
    Closed,
    /// No answer within the client's deadline.
    Hung,
}

/// HAProxy #13: the "too many fds, kill an idle connection" path crashed, and only at the
/// fd limit. ringway is started normally, then its `RLIMIT_NOFILE` is lowered (prlimit)
/// to leave about 24 free fds, and 64 clients at once each send a slow request (so client
/// and backend fds are held together). Nothing may crash; every client gets a response
/// or a clean close, none hangs; and once the load is gone the proxy serves again and
/// its fd count returns to where it was.
#[test]
fn at_the_fd_limit_clients_get_an_answer_and_the_proxy_recovers() {
    const CLIENTS: usize = 64;
    let origin = origin();
    let spec = origin.addr().to_string();
    let mut proxy = Proxy::start(&[
        "--backend",
        &spec,
        "--reuse",
        "always",
        "--pool-purge-delay",
        "200ms",
    ]);
    assert_eq!(proxy.connect().get("/").status, 200);
    settle(&proxy, origin.addr(), 0);
    let fds_before = metric(&proxy.metrics(), "ringway_open_fds");
    let limit = limit_leaving(proxy.pid(), 24);
    set_nofile(proxy.pid(), limit);

    let addr = proxy.addr;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || -> Seen {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    return Seen::Closed;
                };
                s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
                if s.write_all(
                    b"GET /delay/300 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
                )
                .is_err()
                {
                    return Seen::Closed;
                }
                let mut got = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    match s.read(&mut b) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&b[..n]),
                        Err(e)
                            if e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::TimedOut =>
                        {
                            return Seen::Hung
                        }
                        Err(_) => break,
                    }
                }
                let line = String::from_utf8_lossy(&got);
                match line.split(' ').nth(1).and_then(|c| c.parse().ok()) {
                    Some(code) if line.starts_with("HTTP/1.1 ") => Seen::Status(code),
                    _ => Seen::Closed,
                }
            })
        })
        .collect();
    let mut seen: BTreeMap<Seen, usize> = BTreeMap::new();
    for t in threads {
        *seen.entry(t.join().expect("client thread")).or_default() += 1;
    }
    eprintln!("at the fd limit ({limit}): {seen:?}");
    proxy.assert_healthy();
    assert!(
        !seen.contains_key(&Seen::Hung),
        "clients hung at the fd limit: {seen:?}"
    );
    assert!(
        seen.get(&Seen::Status(200)).copied().unwrap_or(0) > 0,
        "nothing was served at the fd limit: {seen:?}"
    );
    for s in seen.keys() {
        if let Seen::Status(code) = s {
            assert!(
                *code == 200 || *code == 503,
                "at the fd limit a client gets 200 or 503 (our limit, not the server's): {seen:?}"
            );
        }
    }

    // Load gone: the proxy serves normally again (a server marked down by a failed
    // connect is retried after a second) and gives its fds back once the purge has
    // closed the idle connections the load left.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        // Right after the limit is lifted a connect can still be refused (the kernel
        // resets what queued while accepts failed): that is "not recovered yet".
        let r = Conn::try_connect(addr)
            .ok()
            .and_then(|c| c.try_read_response_after_get());
        if r == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not recover after the load: last {r:?}\n{}",
            proxy.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        last = metric(&proxy.metrics(), "ringway_open_fds");
        if last <= fds_before {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        last <= fds_before,
        "{last} fds open after the load, {fds_before} before"
    );
    proxy.assert_healthy();
}

/// Found by the test above: a backend connect that fails because the *proxy* is out of
/// fds (EMFILE from socket(2)) was treated as the server's failure (502, the server
/// marked down on every shard, its idle connections drained). The server is fine; the
/// proxy is out of a local resource: that is a 503, counted in
/// `ringway_local_exhaustion_total`, and no reason to mark anything down. Deterministic: the proxy is left exactly as many fds as the
/// clients it has accepted, so the next request's connect is the one that fails.
#[test]
fn running_out_of_fds_is_not_the_servers_fault() {
    const HELD: usize = 8;
    let origin = origin();
    let server = origin.addr();
    let spec = server.to_string();
    let mut proxy = Proxy::start(&["--backend", &spec, "--reuse", "never"]);
    assert_eq!(proxy.connect().get("/").status, 200);
    settle(&proxy, server, 0);
    // Exactly HELD free fds, taken by HELD client connections (counted in /proc, which
    // costs the proxy no fd).
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
            .unwrap()
            .count()
    };
    let before = fds();
    set_nofile(proxy.pid(), limit_leaving(proxy.pid(), HELD as u64));
    let mut held: Vec<Conn> = (0..HELD).map(|_| proxy.connect()).collect();
    wait_until(Duration::from_secs(5), "the held clients accepted", || {
        fds() >= before + HELD
    });
    // Every fd is taken: this request's backend connect fails with EMFILE.
    let r = held[0].get("/");
    drop(held);
    let m = proxy.metrics();
    let down = metric(&m, "ringway_server_down_total{shard=\"all\"}");
    proxy.assert_healthy();
    assert_eq!(
        (r.status, down),
        (503, 0),
        "the proxy's own fd exhaustion was blamed on the server (status, server_down_total)"
    );
}

trait GetStatus {
    fn try_read_response_after_get(self) -> Option<u16>;
}

impl GetStatus for Conn {
    /// One GET; its status, or `None` on an I/O error.
    fn try_read_response_after_get(mut self) -> Option<u16> {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .ok()?;
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .ok()?;
        self.try_read_response(false).ok().map(|r| r.status)
    }
}

// ---------------------------------------------------------------------------------------
// #6 and #16 over HTTP/2: h2 clients and h2c backends

/// What the test's h2c backend does with its `n`th connection (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum H2Mode {
    /// Answers an HTTP/1.1 error and closes: the HTTP/2 handshake fails.
    Garbage,
    /// Answers its first stream (200, empty), then sends GOAWAY(last = that stream,
    /// NO_ERROR) and keeps the socket open, reading and counting every HEADERS frame
    /// that still comes (answering none): the connection is unusable but alive.
    GoawayAfterFirst,
    /// A real server (the `h2` crate): each stream answers `conn=N path=P` after `delay`;
    /// `/hang` never answers and counts the cancel when the proxy resets it.
    Good,
}

#[derive(Default)]
struct H2Backend {
    conns: AtomicU64,
    /// HEADERS frames a GoawayAfterFirst connection got after its GOAWAY.
    after_goaway: AtomicU64,
    streams: AtomicU64,
    cancelled: AtomicU64,
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Starts an h2c backend on its own glommio thread; `mode(n)` says what connection `n`
/// does.
fn h2_backend(
    mode: impl Fn(u64) -> H2Mode + Send + 'static,
    delay: Duration,
) -> (SocketAddr, Arc<H2Backend>) {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let state = Arc::new(H2Backend::default());
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let (tx, rx) = mpsc::channel();
    let st = state.clone();
    std::thread::spawn(move || {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind(addr).expect("bind backend");
                tx.send(()).unwrap();
                while let Ok(mut stream) = listener.accept().await {
                    let n = st.conns.fetch_add(1, Ordering::Relaxed) + 1;
                    let st = st.clone();
                    let m = mode(n);
                    glommio::spawn_local(async move {
                        match m {
                            H2Mode::Garbage => {
                                let _ = stream
                                    .write_all(
                                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                                    )
                                    .await;
                            }
                            H2Mode::GoawayAfterFirst => {
                                let _ = stream.write_all(&h2_frame(4, 0, 0, &[])).await;
                                let (mut buf, mut chunk) = (Vec::new(), [0u8; 16384]);
                                let mut preface = true;
                                let mut goaway = false;
                                loop {
                                    let Ok(k) = stream.read(&mut chunk).await else {
                                        return;
                                    };
                                    if k == 0 {
                                        return;
                                    }
                                    buf.extend_from_slice(&chunk[..k]);
                                    if preface {
                                        if buf.len() < 24 {
                                            continue;
                                        }
                                        buf.drain(..24);
                                        preface = false;
                                    }
                                    let mut out = Vec::new();
                                    while buf.len() >= 9 {
                                        let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]])
                                            as usize;
                                        if buf.len() < 9 + len {
                                            break;
                                        }
                                        let (kind, flags) = (buf[3], buf[4]);
                                        let sid =
                                            u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]])
                                                & 0x7fff_ffff;
                                        match kind {
                                            4 if flags & 1 == 0 => {
                                                out.extend(h2_frame(4, 1, 0, &[]))
                                            }
                                            6 if flags & 1 == 0 => {
                                                out.extend(h2_frame(6, 1, 0, &buf[9..9 + len]))
                                            }
                                            1 if goaway => {
                                                st.after_goaway.fetch_add(1, Ordering::Relaxed);
                                            }
                                            1 => {
                                                st.streams.fetch_add(1, Ordering::Relaxed);
                                                // :status 200 (static index 8), END_STREAM|END_HEADERS.
                                                out.extend(h2_frame(1, 5, sid, &[0x88]));
                                                let mut g = sid.to_be_bytes().to_vec();
                                                g.extend_from_slice(&0u32.to_be_bytes());
                                                out.extend(h2_frame(7, 0, 0, &g));
                                                goaway = true;
                                            }
                                            _ => {}
                                        }
                                        buf.drain(..9 + len);
                                    }
                                    if !out.is_empty() && stream.write_all(&out).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            H2Mode::Good => serve_good_h2(stream, n, delay, st).await,
                        }
                    })
                    .detach();
                }
            })
            .expect("backend executor")
            .join()
            .ok();
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("backend listens");
    (addr, state)
}

async fn serve_good_h2(
    stream: glommio::net::TcpStream,
    n: u64,
    delay: Duration,
    st: Arc<H2Backend>,
) {
    use ringway_h2mux::server::{self as h2s, Settings};
    let Ok(mut conn) = h2s::handshake(stream, Vec::new(), &Settings::default()).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        st.streams.fetch_add(1, Ordering::Relaxed);
        let st = st.clone();
        glommio::spawn_local(async move {
            let path = req
                .uri()
                .path_and_query()
                .map_or("", |p| p.as_str())
                .to_string();
            if path.contains("/hang") {
                if std::future::poll_fn(|cx| respond.poll_reset(cx))
                    .await
                    .is_ok()
                {
                    st.cancelled.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            glommio::timer::sleep(delay).await;
            let resp = http::Response::builder().status(200).body(()).unwrap();
            if let Ok(mut send) = respond.send_response(resp, false) {
                let body = bytes::Bytes::from(format!("conn={n} path={path}"));
                let _ = h2s::send_body(&mut send, body, true).await;
            }
        })
        .detach();
    }
}

/// An h2 client connection (prior knowledge) driven by its own task; dropping the
/// returned task ends the connection abruptly.
async fn h2_client(addr: SocketAddr) -> (h2::client::SendRequest<bytes::Bytes>, glommio::Task<()>) {
    let stream = glommio::net::TcpStream::connect(addr)
        .await
        .expect("connect");
    let (send, conn) = h2::client::handshake(ringway_h2mux::io::TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    let task = glommio::spawn_local(async move {
        let _ = conn.await;
    });
    (send, task)
}

/// GET `path` on an h2 client connection: (status, body as text).
async fn h2_get(send: &h2::client::SendRequest<bytes::Bytes>, uri: &str) -> Option<(u16, String)> {
    let mut ready = send.clone().ready().await.ok()?;
    let req = http::Request::get(uri).body(()).unwrap();
    let (resp, _) = ready.send_request(req, true).ok()?;
    let resp = resp.await.ok()?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(d) = body.data().await {
        let d = d.ok()?;
        let _ = body.flow_control().release_capacity(d.len());
        text.extend_from_slice(&d);
    }
    Some((status, String::from_utf8_lossy(&text).into_owned()))
}

/// HAProxy #16 over HTTP/2: an h2c backend connection that failed its handshake went
/// into the safe list and was reused forever (permanent 503s), and one that got a GOAWAY
/// stayed pooled though unusable. Here: connections 1 and 2 answer HTTP/1.1 garbage (the
/// handshake fails: those requests get 502), connection 3 answers one stream and sends
/// GOAWAY but stays open; every later request must go on connection 4 and succeed, and
/// nothing more is ever sent on connection 3.
#[test]
fn h2_backend_connections_that_failed_their_handshake_or_got_goaway_are_never_reused() {
    let (addr, st) = h2_backend(
        |n| match n {
            1 | 2 => H2Mode::Garbage,
            3 => H2Mode::GoawayAfterFirst,
            _ => H2Mode::Good,
        },
        Duration::ZERO,
    );
    let spec = format!("h2c://{addr}");
    let mut proxy = Proxy::start(&[
        "--backend",
        &spec,
        "--reuse",
        "always",
        "--timeout-backend",
        "3s",
        "--access-log",
        "off",
    ]);
    let mut got = Vec::new();
    for i in 0..20 {
        let r = proxy.connect().get(&format!("/r{i}"));
        got.push((r.status, r.text()));
    }
    assert_eq!(got[0].0, 502, "{got:?}");
    assert_eq!(got[1].0, 502, "{got:?}");
    assert_eq!(got[2].0, 200, "{got:?}");
    for (i, (status, text)) in got.iter().enumerate().skip(3) {
        assert_eq!(*status, 200, "request {i}: {got:?}");
        assert_eq!(text, &format!("conn=4 path=/r{i}"), "request {i}");
    }
    assert_eq!(
        st.after_goaway.load(Ordering::Relaxed),
        0,
        "a stream went on the GOAWAY'd connection"
    );
    assert_eq!(st.conns.load(Ordering::Relaxed), 4);
    // The same over an HTTP/2 client.
    let addr_p = proxy.addr;
    let texts = on_glommio(move || async move {
        let (send, _task) = h2_client(addr_p).await;
        let mut out = Vec::new();
        for i in 0..20 {
            out.push(h2_get(&send, &format!("http://test/h{i}")).await);
        }
        out
    });
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(t.as_ref().map(|t| t.0), Some(200), "h2 request {i}");
        assert_eq!(t.as_ref().unwrap().1, format!("conn=4 path=/h{i}"));
    }
    assert_eq!(st.conns.load(Ordering::Relaxed), 4);
    proxy.assert_healthy();
}

/// HAProxy #6 over HTTP/2: with `http-reuse always`, an H2 backend connection kept
/// pointing at a client session that had been freed. Here client A (HTTP/2) has 40
/// streams in flight — 20 on the shared h2c backend connection (10 that never answer, 10
/// slow), 20 at a slow HTTP/1.1 origin — and its connection is dropped. Then client B
/// uses the same backend connections: every answer is B's own (a token per request), A's
/// never-answering backend streams are all cancelled, and A's cancelled HTTP/1.1
/// responses were drained and their connections pooled (B needs no new ones beyond them).
#[test]
fn h2_clients_gone_mid_stream_leave_nothing_on_shared_or_pooled_backend_connections() {
    let web = origin();
    let (h2addr, st) = h2_backend(|_| H2Mode::Good, Duration::from_millis(300));
    let web_spec = format!("web={}", web.addr());
    let h2_spec = format!("h2=h2c://{h2addr}");
    let mut proxy = Proxy::start(&[
        "--backend",
        &web_spec,
        "--backend",
        &h2_spec,
        "--route",
        "*/h2=h2",
        "--reuse",
        "always",
        "--access-log",
        "off",
    ]);
    let addr = proxy.addr;
    on_glommio(move || async move {
        let (send, task) = h2_client(addr).await;
        let mut pending = Vec::new();
        for i in 0..10 {
            for path in [
                format!("/h2/hang?a={i}"),
                format!("/h2/slow?a={i}"),
                format!("/delay/300?a={i}"),
                format!("/delay/250?c={i}"),
            ] {
                let mut ready = send.clone().ready().await.expect("ready");
                let req = http::Request::get(format!("http://test{path}"))
                    .body(())
                    .unwrap();
                pending.push(ready.send_request(req, true).expect("send"));
            }
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
        // A goes away with everything in flight.
        drop(task);
        drop(pending);
        drop(send);
    });
    let a_conns = web.stats().connections_total;
    wait_until(
        Duration::from_secs(10),
        "A's hanging backend streams cancelled",
        || st.cancelled.load(Ordering::Relaxed) == 10,
    );
    let texts = on_glommio(move || async move {
        let (send, _task) = h2_client(addr).await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let send = send.clone();
            tasks.push(glommio::spawn_local(async move {
                let h2 = h2_get(&send, &format!("http://test/h2/x?tok=B{i}")).await;
                let h1 = h2_get(&send, &format!("http://test/headers?tok=B{i}")).await;
                (i, h2, h1)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    });
    for (i, h2, h1) in texts {
        let (s, t) = h2.expect("h2c answer");
        assert_eq!(s, 200);
        assert!(
            t.ends_with(&format!("path=/h2/x?tok=B{i}")),
            "B{i} got {t:?}"
        );
        let (s, t) = h1.expect("h1 answer");
        assert_eq!(s, 200);
        assert!(t.contains(&format!("tok=B{i} ")), "B{i} got {t:?}");
        assert!(
            !t.contains("?a=") && !t.contains("?c="),
            "B{i} got A's answer: {t:?}"
        );
    }
    // One shared h2c connection served both sessions.
    assert_eq!(st.conns.load(Ordering::Relaxed), 1);
    let m = proxy.metrics();
    let drained = sum_metric(&m, "ringway_cancel_drained_total", &[]) as u64;
    assert!(
        drained >= 15,
        "A's 20 cancelled HTTP/1.1 requests: {drained} drained\n{m}"
    );
    eprintln!(
        "origin connections: {a_conns} for A, {} in all",
        web.stats().connections_total
    );
    proxy.assert_healthy();
}
