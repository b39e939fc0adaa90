//! Large response bodies by splice(2) (`--splice-min`, off by default, turned on here at
//! 64 KiB; `engine/src/splice.rs`), through the real interface: real sockets, the `ringway` binary, `/metrics`. Each test holds
//! the spliced path to what the copying path guarantees: bodies byte-exact at awkward
//! sizes, the backend connection reused after a spliced body, never a byte of the
//! backend's beyond the body taken, slow clients and slow backends, bodies given up
//! (backend dies, client goes) closing what they must and leaking no descriptor.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

/// `ringway_*` counters summed over shards.
fn counter(proxy: &Proxy, name: &str) -> u64 {
    sum_metric(&proxy.metrics(), name, &[]) as u64
}

fn spliced(proxy: &Proxy) -> (u64, u64) {
    (
        counter(proxy, "ringway_body_spliced_total"),
        counter(proxy, "ringway_body_spliced_bytes_total"),
    )
}

/// Body bytes sent to clients straight from the receive buffer ring.
fn ring_sent(proxy: &Proxy) -> u64 {
    counter(proxy, "ringway_body_ring_sent_bytes_total")
}

/// The proxy's open descriptors, less those of its pooled pipes (how many pipes a
/// shard keeps depends on which bodies happened to be spliced) and those of its admin
/// listener and admin connections (reading `/metrics` opens one, closed a moment later).
fn fds(proxy: &Proxy) -> usize {
    let pooled = counter(proxy, "ringway_splice_pipes_pooled") as usize;
    // Sockets whose local port is the admin port, by inode (`/proc/net/tcp`).
    let admin_port = format!(":{:04X}", proxy.admin.port());
    let tcp = std::fs::read_to_string(format!("/proc/{}/net/tcp", proxy.pid())).unwrap();
    let admin: Vec<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1].ends_with(&admin_port)).then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let open = std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
        .expect("read /proc/PID/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| !admin.iter().any(|a| l.as_os_str() == a.as_str()))
        .count();
    open - 2 * pooled
}

/// A backend written here, for what the origin will not do (die mid-body, send bytes
/// nobody asked for, trickle a body). `answer(connection, path, stream)` writes the
/// response of each request head read; `false` closes the connection.
struct RawBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl RawBackend {
    fn start(
        answer: impl Fn(usize, &str, &mut TcpStream) -> bool + Send + Sync + 'static,
    ) -> RawBackend {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(answer);
        let count = connections.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut head = Vec::new();
                    let mut b = [0u8; 4096];
                    loop {
                        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match s.read(&mut b) {
                                Ok(0) | Err(_) => return,
                                Ok(k) => head.extend_from_slice(&b[..k]),
                            }
                            continue;
                        };
                        let text = String::from_utf8_lossy(&head[..end]).into_owned();
                        head.drain(..end + 4);
                        let path = text.split(' ').nth(1).unwrap_or("/").to_string();
                        if !answer(n, &path, &mut s) {
                            return;
                        }
                    }
                });
            }
        });
        RawBackend { addr, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn head(len: usize) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes()
}

/// Bodies at and around the threshold and the pipe's size, odd lengths, one larger than
/// everything the sockets and the pipe hold at once: each byte-exact, on one client
/// connection and one backend connection. Those below `--splice-min` are copied, those
/// at or above it are spliced (once the connection carried its first large body), and
/// `/metrics` counts exactly those.
#[test]
fn bodies_at_or_above_the_threshold_are_spliced_byte_exact_on_one_backend_connection() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--splice-min", "64KiB"]);
    let mut c = proxy.connect();
    // The backend connection exists and is pooled before the counting starts, and has
    // carried one large body: the first may be copied in part or whole (the backend
    // stream's multishot receive may have taken it in before its head was read); from
    // then on the connection's receives are single ones and every large body is spliced.
    assert_eq!(c.get("/size/10").body, pattern(10));
    assert!(c.get("/size/1048576").body == pattern(1 << 20));
    let conn = c.get("/size/10").num("x-origin-conn");

    let copied = [16_384usize, 65_535];
    let spliced_sizes = [
        65_536usize,
        65_537,
        100_003,
        262_144,
        262_145,
        1 << 20,
        3_000_017,
        (12 << 20) + 7,
    ];
    let (b0, bytes0) = spliced(&proxy);
    for n in copied {
        let r = c.get(&format!("/size/{n}"));
        assert!(r.body == pattern(n), "{n}-byte body differs");
        assert_eq!(
            r.num("x-origin-conn"),
            conn,
            "{n}: another backend connection"
        );
    }
    assert_eq!(spliced(&proxy).0, b0, "bodies below 64 KiB were spliced");
    for n in spliced_sizes {
        let r = c.get(&format!("/size/{n}"));
        assert_eq!(r.body.len(), n);
        assert!(r.body == pattern(n), "{n}-byte spliced body differs");
        assert_eq!(
            r.num("x-origin-conn"),
            conn,
            "{n}: the backend connection was not reused after a spliced body"
        );
        // The next small response on the same connection is whole and alone.
        let small = c.get("/size/7");
        assert_eq!(small.body, pattern(7), "after {n}: a small body differs");
        assert_eq!(small.num("x-origin-conn"), conn);
    }
    let (b1, bytes) = spliced(&proxy);
    let bytes = bytes - bytes0;
    assert_eq!(
        b1 - b0,
        spliced_sizes.len() as u64,
        "every body of 64 KiB or more is spliced"
    );
    let total: u64 = spliced_sizes.iter().map(|&n| n as u64).sum();
    // What came with each head is copied; the rest is spliced.
    assert!(
        bytes <= total && bytes >= total - spliced_sizes.len() as u64 * (64 << 10),
        "spliced bytes {bytes} of {total}"
    );
    assert_eq!(
        counter(&proxy, "ringway_splice_pipes_opened_total"),
        1,
        "one body at a time needs one pipe, reused"
    );
    assert!(c.unread_bytes(Duration::from_millis(50)).is_empty());
    proxy.assert_healthy();
}

/// `--splice-min 0`, the default, turns splicing off: no body is spliced, and each is
/// still right.
#[test]
fn splice_min_zero_and_the_default_splice_no_body() {
    let origin = origin();
    let backend = origin.addr().to_string();
    for extra in [&["--splice-min", "0"][..], &[][..]] {
        let mut args = vec!["--backend", backend.as_str()];
        args.extend_from_slice(extra);
        let mut proxy = Proxy::start(&args);
        let mut c = proxy.connect();
        for n in [65_536usize, 1 << 20, 3_000_017, 1 << 20] {
            assert!(c.get(&format!("/size/{n}")).body == pattern(n));
        }
        assert_eq!(spliced(&proxy), (0, 0), "{extra:?}");
        assert_eq!(counter(&proxy, "ringway_splice_pipes_opened_total"), 0);
        proxy.assert_healthy();
    }
}

/// With splicing off (the default) a `Content-Length` body is sent to a plain client
/// straight from the receive buffer ring: byte-exact at sizes from one byte to several
/// times what the ring's eight queued buffers hold, the backend connection reused after
/// each and the next small response whole and alone, and `/metrics` counts bytes sent
/// from the ring, never more than the bodies. With the ring off
/// (`GLOMMIO_RECV_BUFFER_RING=off`) the same bodies are copied and just as right.
#[test]
fn content_length_bodies_are_sent_from_the_ring_byte_exact_on_one_backend_connection() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let sizes = [
        1usize,
        100,
        16_383,
        16_384,
        16_385,
        70_000,
        131_073,
        1 << 20,
        5_000_003,
    ];
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    for ring in [true, false] {
        let env: &[&str] = if ring {
            &[]
        } else {
            &["GLOMMIO_RECV_BUFFER_RING=off"]
        };
        let mut proxy = Proxy::start_with_env(env, &["--backend", &backend]);
        let mut c = proxy.connect();
        let conn = c.get("/size/10").num("x-origin-conn");
        let before = ring_sent(&proxy);
        for n in sizes {
            let r = c.get(&format!("/size/{n}"));
            assert_eq!(r.body.len(), n, "ring {ring}: {n}-byte body's length");
            assert!(r.body == pattern(n), "ring {ring}: {n}-byte body differs");
            assert_eq!(
                r.num("x-origin-conn"),
                conn,
                "ring {ring}: {n}: the backend connection was not reused"
            );
            let small = c.get("/size/7");
            assert_eq!(
                small.body,
                pattern(7),
                "ring {ring}: after {n}: a small body differs"
            );
            assert_eq!(small.num("x-origin-conn"), conn);
        }
        let sent = ring_sent(&proxy) - before;
        if ring {
            // The 5 MB body alone is far more than what comes with its head.
            assert!(
                sent > 1 << 20 && sent <= total,
                "{sent} bytes sent from the ring, of {total}"
            );
        } else {
            assert_eq!(sent, 0, "bytes sent from a ring that is off");
        }
        assert_eq!(spliced(&proxy), (0, 0));
        assert!(c.unread_bytes(Duration::from_millis(50)).is_empty());
        proxy.assert_healthy();
    }
}

/// A threshold from the command line is honoured (`1MiB`: 1 MiB - 1 copied, 1 MiB
/// spliced once the connection carried a large body), and a bad one names the flag and
/// exits 2.
#[test]
fn splice_min_is_a_size_and_a_bad_one_exits_2() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let proxy = Proxy::start(&["--backend", &backend, "--splice-min", "1MiB"]);
    let mut c = proxy.connect();
    assert!(c.get("/size/1048576").body == pattern(1 << 20));
    let before = spliced(&proxy).0;
    for _ in 0..3 {
        assert!(c.get("/size/1048575").body == pattern(1_048_575));
    }
    assert_eq!(
        spliced(&proxy).0,
        before,
        "a body below --splice-min was spliced"
    );
    for _ in 0..3 {
        assert!(c.get("/size/1048576").body == pattern(1 << 20));
    }
    assert_eq!(
        spliced(&proxy).0,
        before + 3,
        "a body of --splice-min was not spliced"
    );

    let out = std::process::Command::new(BIN)
        .args([
            "--backend",
            &backend,
            "--listen",
            "127.0.0.1:0",
            "--splice-min",
            "lots",
        ])
        .output()
        .expect("run ringway");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("splice-min"),
        "stderr does not name the flag: {err}"
    );
}

/// A client that reads slowly (nothing for a while, then in small bites) makes the
/// client socket refuse more: the splice waits for it to drain and loses nothing.
/// 32 MiB is more than the client socket, the proxy's send buffer and the pipe hold.
#[test]
fn a_slow_client_gets_the_whole_spliced_body() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--splice-min", "64KiB"]);
    read_slowly(&proxy, 32 << 20);
    assert_eq!(spliced(&proxy).0, 1);
    proxy.assert_healthy();
}

/// The same slow client where the body is sent from the receive buffer ring (the
/// default, `--splice-min 0`): the client's full socket makes the relay copy what the
/// ring held and wait the ordinary way, again and again; nothing is lost or reordered,
/// and bytes were sent from the ring between the waits.
#[test]
fn a_slow_client_gets_the_whole_body_sent_from_the_ring() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    read_slowly(&proxy, 32 << 20);
    assert_eq!(spliced(&proxy).0, 0);
    assert!(ring_sent(&proxy) > 0, "nothing was sent from the ring");
    proxy.assert_healthy();
}

/// Asks for an `n`-byte body, reads nothing for 300 ms, then reads in 4 KiB bites with
/// pauses, and checks every byte.
fn read_slowly(proxy: &Proxy, n: u64) {
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(format!("GET /size/{n} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    // Nothing read for a while: the client socket fills and refuses more.
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    let mut b = vec![0u8; 4096];
    let mut bites = 0u32;
    // The head, then the body hashed as it comes.
    let mut h = Sha256::new();
    let mut body = 0u64;
    let mut head_len = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while head_len.is_none() || body < n {
        assert!(
            Instant::now() < deadline,
            "body not through in 60 s: {body} of {n}"
        );
        let k = s.read(&mut b).expect("read");
        assert!(k > 0, "closed with {body} of {n} body bytes");
        bites += 1;
        if bites.is_multiple_of(64) && bites < 4096 {
            std::thread::sleep(Duration::from_millis(2));
        }
        match head_len {
            None => {
                got.extend_from_slice(&b[..k]);
                if let Some(e) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    head_len = Some(e + 4);
                    let rest = &got[e + 4..];
                    h.update(rest);
                    body += rest.len() as u64;
                }
            }
            Some(_) => {
                h.update(&b[..k]);
                body += k as u64;
            }
        }
    }
    assert_eq!(body, n, "more bytes than the body");
    let digest: [u8; 32] = h.finalize().into();
    assert_eq!(digest, pattern_sha256(n), "slowly read body differs");
}

/// A backend that trickles its body (16 pieces, 10 ms apart) makes the backend socket
/// run dry again and again: the splice, and the send from the ring, wait for it and the
/// body is whole.
#[test]
fn a_slow_backend_body_is_spliced_or_sent_from_the_ring_whole() {
    const N: usize = 1 << 20;
    let b = RawBackend::start(|_, _, s| {
        let body = pattern(N);
        if s.write_all(&head(N)).is_err() {
            return false;
        }
        for piece in body.chunks(N / 16) {
            std::thread::sleep(Duration::from_millis(10));
            if s.write_all(piece).is_err() {
                return false;
            }
        }
        true
    });
    let backend = b.addr.to_string();
    let mut connections = 0;
    for splice_min in ["64KiB", "0"] {
        let mut proxy = Proxy::start(&["--backend", &backend, "--splice-min", splice_min]);
        let mut c = proxy.connect();
        for _ in 0..3 {
            let r = c.get("/");
            assert!(
                r.body == pattern(N),
                "--splice-min {splice_min}: trickled body differs"
            );
        }
        connections += 1;
        assert_eq!(
            b.connections(),
            connections,
            "--splice-min {splice_min}: the backend connection was not reused"
        );
        if splice_min == "0" {
            assert_eq!(spliced(&proxy).0, 0);
            assert!(
                ring_sent(&proxy) > 0,
                "the trickled body was not sent from the ring"
            );
        } else {
            assert_eq!(spliced(&proxy).0, 3);
        }
        proxy.assert_healthy();
    }
}

/// A backend that sends, in the same write as a spliced body, bytes of a response
/// nobody asked for: the splice never takes a byte past the body, the client never sees
/// those bytes, and the connection that carried them is not reused.
#[test]
fn bytes_past_a_spliced_body_never_reach_a_client() {
    const N: usize = 300_000;
    for splice_min in ["64KiB", "0"] {
        let b = RawBackend::start(|conn, _, s| {
            let mut out = head(N);
            out.extend_from_slice(&pattern(N));
            if conn == 0 {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!");
            }
            s.write_all(&out).is_ok()
        });
        let backend = b.addr.to_string();
        let mut proxy = Proxy::start(&["--backend", &backend, "--splice-min", splice_min]);
        let mut c = proxy.connect();
        for i in 0..4 {
            let r = c.get("/");
            assert!(
                r.body == pattern(N),
                "--splice-min {splice_min}: response {i} is not the backend's answer to it \
                 ({} bytes: {:?}...)",
                r.body.len(),
                String::from_utf8_lossy(&r.body[..r.body.len().min(16)])
            );
        }
        assert!(
            b.connections() >= 2,
            "--splice-min {splice_min}: the connection with unasked-for bytes was reused"
        );
        assert!(c.unread_bytes(Duration::from_millis(50)).is_empty());
        proxy.assert_healthy();
    }
}

/// A backend that dies mid-body: the client gets the head and part of the body, then
/// its connection closes (a short body is never passed off as whole); the backend
/// connection is not reused, and no descriptor (socket or pipe) is left behind.
#[test]
fn a_backend_dying_mid_body_closes_the_client_and_leaks_nothing() {
    backend_dies_mid_body("64KiB");
}

/// The same where the body is sent from the receive buffer ring (`--splice-min 0`).
#[test]
fn a_backend_dying_mid_body_sent_from_the_ring_closes_the_client_and_leaks_nothing() {
    backend_dies_mid_body("0");
}

fn backend_dies_mid_body(splice_min: &str) {
    const N: usize = 4 << 20;
    let b = RawBackend::start(|_, path, s| {
        let body = pattern(N);
        let _ = s.write_all(&head(N));
        if path == "/die" {
            let _ = s.write_all(&body[..N / 3]);
            return false;
        }
        s.write_all(&body).is_ok()
    });
    let backend = b.addr.to_string();
    // `always`: each new client takes the pooled connection (under `safe` only one
    // reused before may carry a client's first request), so one is open at a time.
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--splice-min",
        splice_min,
        "--reuse",
        "always",
    ]);
    {
        let mut c = proxy.connect();
        assert!(c.get("/").body == pattern(N));
    }
    // Settled: the client connection closed, a pooled backend connection.
    let mut last = fds(&proxy);
    let base = wait_for(Duration::from_secs(5), "the fd count to settle", || {
        std::thread::sleep(Duration::from_millis(50));
        let now = fds(&proxy);
        let same = now == last;
        last = now;
        same.then_some(now)
    });

    let mut c = proxy.connect();
    c.send(b"GET /die HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut body = 0usize;
    let r = c.read_response_with(false, &mut |d| body += d.len());
    assert!(r.is_err(), "a short body was passed off as whole");
    assert!(
        body < N,
        "{body} bytes of a body the backend cut at {}",
        N / 3
    );
    drop(c);

    // A fresh backend connection and pipe serve the next spliced body.
    let opened = counter(&proxy, "ringway_splice_pipes_opened_total");
    let before = b.connections();
    {
        let mut c = proxy.connect();
        assert!(c.get("/").body == pattern(N));
    }
    assert_eq!(
        b.connections(),
        before + 1,
        "the broken backend connection was reused"
    );
    if splice_min == "0" {
        assert_eq!(opened, 0, "a pipe opened with splicing off");
        assert!(ring_sent(&proxy) > 0, "nothing was sent from the ring");
    } else {
        assert_eq!(
            counter(&proxy, "ringway_splice_pipes_opened_total"),
            opened + 1,
            "the pipe of the broken body was reused"
        );
    }
    wait_until(
        Duration::from_secs(5),
        "the fd count back to where it was",
        || fds(&proxy) == base,
    );
    proxy.assert_healthy();
}

/// A client that goes away mid-body: its pipe (holding bytes) is closed (or the ring's
/// buffers it held go back to the ring), the backend
/// connection (mid-body) is closed, nothing leaks, and the next client is served.
#[test]
fn a_client_leaving_mid_body_leaks_nothing() {
    client_leaves_mid_body("64KiB");
}

/// The same where the body is sent from the receive buffer ring (`--splice-min 0`).
#[test]
fn a_client_leaving_mid_body_sent_from_the_ring_leaks_nothing() {
    client_leaves_mid_body("0");
}

fn client_leaves_mid_body(splice_min: &str) {
    let origin = origin();
    let backend = origin.addr().to_string();
    // `always`: a new client's first request takes the pooled connection (under `safe`
    // only one reused before may carry it), so the one cut mid-body is the only one.
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--splice-min",
        splice_min,
        "--reuse",
        "always",
    ]);
    {
        let mut c = proxy.connect();
        assert!(c.get("/size/1048576").body == pattern(1 << 20));
    }
    wait_until(Duration::from_secs(5), "one backend connection", || {
        origin.stats().connections_open == 1
    });
    let base = fds(&proxy);

    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(b"GET /size/67108864 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut b = vec![0u8; 64 << 10];
        let mut got = 0;
        while got < (1 << 20) {
            let k = s.read(&mut b).unwrap();
            assert!(k > 0);
            got += k;
        }
        drop(s);
        // The backend connection, mid-body, is closed, not pooled.
        wait_until(
            Duration::from_secs(10),
            "the backend connection closed",
            || origin.stats().connections_open == 0,
        );
        let mut c = proxy.connect();
        assert!(c.get("/size/1048576").body == pattern(1 << 20));
        drop(c);
        wait_until(
            Duration::from_secs(5),
            "the fd count back to where it was",
            || fds(&proxy) == base,
        );
    }
    if splice_min == "0" {
        assert_eq!(spliced(&proxy).0, 0);
        assert!(
            ring_sent(&proxy) > 3 << 20,
            "the bodies cut short were not sent from the ring"
        );
    } else {
        assert!(
            spliced(&proxy).0 >= 3,
            "the bodies cut short were not spliced"
        );
    }
    proxy.assert_healthy();
}

/// A TLS backend or an HTTP/2 client cannot be spliced (the bytes are encrypted or
/// framed): a large body through the h2c front is copied and whole.
#[test]
fn an_h2c_client_gets_a_copied_body() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--splice-min", "64KiB"]);
    let path = temp_path("splice-h2c");
    let _f = TempFile(path.clone());
    let out = curl(&[
        "-sS",
        "--http2-prior-knowledge",
        "--max-time",
        "20",
        "-o",
        path.to_str().unwrap(),
        &proxy.url("/size/3000017"),
    ]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(&path).unwrap();
    assert!(got == pattern(3_000_017), "h2c body differs");
    assert_eq!(spliced(&proxy).0, 0, "an HTTP/2 stream was spliced");
    proxy.assert_healthy();
}
