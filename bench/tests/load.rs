//! End-to-end tests of the load generator (`ringway_bench::load`) against real servers on
//! 127.0.0.1: the in-process `ringway-origin` for counts, framing and error kinds; a tiny
//! threaded server that freezes once for 200 ms, to show that open loop reports a stall
//! that closed loop hides; and a tiny h2c server (the `h2` crate over glommio) for HTTP/2.
//! Every assertion is about what a user of the report would read.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ringway_bench::load::{self, LoadConfig, Report};
use ringway_bench::origin::{Origin, OriginConfig};

fn origin() -> Origin {
    match Origin::start(OriginConfig::default()) {
        Ok(o) => o,
        Err(e) => panic!("origin did not start: {e:#}"),
    }
}

fn cfg(addr: SocketAddr, path: &str) -> LoadConfig {
    LoadConfig {
        url: format!("http://{addr}{path}"),
        connections: 4,
        duration: None,
        requests: Some(100),
        timeout: Duration::from_secs(5),
        ..LoadConfig::default()
    }
}

fn run(c: &LoadConfig) -> Report {
    match load::run(c) {
        Ok(r) => r,
        Err(e) => panic!("load run failed: {e:#}"),
    }
}

/// The origin counts a request when it has answered; poll until it has seen `n`.
fn wait_for_requests(o: &Origin, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = o.stats().requests_total;
        if seen >= n || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn closed_loop_count_matches_the_origin_and_nothing_is_lost() {
    let o = origin();
    let c = LoadConfig {
        connections: 8,
        requests: Some(1000),
        threads: 2,
        ..cfg(o.addr(), "/")
    };
    let r = run(&c);
    assert_eq!(r.requests, 1000);
    assert_eq!(r.status_2xx, 1000);
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!(r.bytes, 1000 * 13, "GET / serves 13 bytes");
    assert_eq!(wait_for_requests(&o, 1000), 1000);
    assert_eq!(
        o.stats().connections_total,
        8,
        "keep-alive: one connection each"
    );
    assert!(r.latency.len() == 1000 && r.p50() > 0 && r.max() >= r.p999());
}

#[test]
fn content_length_chunked_and_close_delimited_bodies_are_counted_exactly() {
    let o = origin();
    let r = run(&LoadConfig {
        requests: Some(50),
        ..cfg(o.addr(), "/size/100000")
    });
    assert_eq!((r.status_2xx, r.bytes), (50, 50 * 100_000));
    let r = run(&LoadConfig {
        requests: Some(50),
        ..cfg(o.addr(), "/chunked/70001")
    });
    assert_eq!((r.status_2xx, r.bytes), (50, 50 * 70_001));
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    // `/close` answers with `Connection: close`: each request needs a fresh connection.
    o.reset_stats();
    let r = run(&LoadConfig {
        requests: Some(40),
        ..cfg(o.addr(), "/close")
    });
    assert_eq!((r.status_2xx, r.errors.total()), (40, 0));
    assert_eq!(wait_for_requests(&o, 40), 40);
    assert!(o.stats().connections_total >= 40);
}

#[test]
fn connection_close_mode_opens_one_connection_per_request() {
    let o = origin();
    let r = run(&LoadConfig {
        requests: Some(300),
        close: true,
        ..cfg(o.addr(), "/")
    });
    assert_eq!((r.status_2xx, r.errors.total()), (300, 0), "{:?}", r.errors);
    assert_eq!(r.connections_opened, 300);
    assert_eq!(wait_for_requests(&o, 300), 300);
    assert_eq!(o.stats().connections_total, 300);
}

#[test]
fn error_kinds_are_reported_by_kind() {
    let o = origin();
    let r = run(&cfg(o.addr(), "/status/503"));
    assert_eq!(
        (r.requests, r.errors.status_5xx, r.status_2xx),
        (100, 100, 0)
    );
    let r = run(&cfg(o.addr(), "/status/404"));
    assert_eq!((r.errors.status_4xx, r.errors.status_5xx), (100, 0));
    let r = run(&cfg(o.addr(), "/reset"));
    assert_eq!(r.requests, 0);
    assert_eq!(r.errors.reset, 100, "{:?}", r.errors);
    let r = run(&cfg(o.addr(), "/garbage"));
    assert_eq!(r.errors.other, 100, "{:?}", r.errors);
    let r = run(&LoadConfig {
        requests: Some(10),
        timeout: Duration::from_millis(100),
        ..cfg(o.addr(), "/delay/1000")
    });
    assert_eq!(r.errors.timeout, 10, "{:?}", r.errors);

    // A port nobody listens on: every attempt is a connect error.
    let closed = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a,
        Err(e) => panic!("cannot find a free port: {e}"),
    };
    let r = run(&LoadConfig {
        requests: Some(20),
        ..cfg(closed, "/")
    });
    assert_eq!((r.requests, r.errors.connect), (0, 20), "{:?}", r.errors);
}

/// A server that reads each request head and closes the connection without answering.
fn closing_server() -> SocketAddr {
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("local_addr: {e}"),
    };
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            // Dropping the stream closes it cleanly (FIN) with no response.
        }
    });
    addr
}

#[test]
fn a_server_that_closes_without_answering_counts_as_closed() {
    let r = run(&LoadConfig {
        requests: Some(30),
        ..cfg(closing_server(), "/")
    });
    assert_eq!((r.requests, r.errors.closed), (0, 30), "{:?}", r.errors);
}

/// A threaded HTTP/1.1 server answering `ok` to every request, except that every answer
/// due during [stall_at, stall_at + stall_for) waits until the stall is over.
fn stall_server(stall_at: Instant, stall_for: Duration) -> SocketAddr {
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("local_addr: {e}"),
    };
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let Ok(mut writer) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                loop {
                    // Read one request head (GET, no body).
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let now = Instant::now();
                    let end = stall_at + stall_for;
                    if now >= stall_at && now < end {
                        std::thread::sleep(end - now);
                    }
                    if writer
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn open_loop_reports_a_200ms_stall_in_p999_that_closed_loop_hides() {
    let stall = Duration::from_millis(200);
    // The run starts ~100 ms after `run` is called; the stall comes 1 s into a 2 s run.
    let addr = stall_server(Instant::now() + Duration::from_millis(1100), stall);
    let open = run(&LoadConfig {
        connections: 10,
        requests: None,
        duration: Some(Duration::from_secs(2)),
        rate: Some(2000.0),
        ..cfg(addr, "/")
    });
    assert_eq!(open.errors.total(), 0, "{:?}", open.errors);
    assert!(
        open.requests > 3500,
        "open loop kept its rate: {}",
        open.requests
    );
    assert!(
        open.p999() >= 150_000,
        "open loop must show the stall in p99.9: {}",
        open.human()
    );
    // ~10% of the requests were due during the stall, waiting 0..200 ms: p99 is deep in it.
    assert!(open.p99() >= 100_000, "{}", open.human());
    eprintln!("open loop vs a 200 ms stall:\n{}", open.human());

    let addr = stall_server(Instant::now() + Duration::from_millis(1100), stall);
    let closed = run(&LoadConfig {
        connections: 4,
        requests: None,
        duration: Some(Duration::from_secs(2)),
        ..cfg(addr, "/")
    });
    assert!(
        closed.max() >= 150_000,
        "the stall happened: {}",
        closed.human()
    );
    assert!(
        closed.requests > 10_000 && closed.p999() < 100_000,
        "closed loop hides it (coordinated omission): {}",
        closed.human()
    );
    eprintln!("closed loop vs the same stall:\n{}", closed.human());
}

/// A tiny h2c server on a glommio executor: answers every request with 200 and
/// `body_size` bytes, counting requests.
fn h2_server(body_size: usize) -> (SocketAddr, Arc<AtomicU64>) {
    use bytes::Bytes;
    use glommio::net::TcpListener as GTcpListener;
    use glommio::{LocalExecutorBuilder, Placement};
    use ringway_h2mux::io::TokioIo;

    let count = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let counter = count.clone();
    let spawned = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .name("h2-test-server")
        .spawn(move || async move {
            let listener = match GTcpListener::bind("127.0.0.1:0") {
                Ok(l) => l,
                Err(e) => panic!("bind: {e}"),
            };
            let _ = tx.send(listener.local_addr().ok());
            let body = Bytes::from(vec![b'h'; body_size]);
            while let Ok(stream) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let counter = counter.clone();
                let body = body.clone();
                glommio::spawn_local(async move {
                    let Ok(mut conn) = h2::server::handshake(TokioIo::new(stream)).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let counter = counter.clone();
                        let body = body.clone();
                        glommio::spawn_local(async move {
                            let mut req_body = req.into_body();
                            while let Some(Ok(chunk)) = req_body.data().await {
                                let _ = req_body.flow_control().release_capacity(chunk.len());
                            }
                            let resp = http::Response::new(());
                            if let Ok(mut send) = respond.send_response(resp, false) {
                                let _ = send.send_data(body, true);
                            }
                            counter.fetch_add(1, Ordering::Relaxed);
                        })
                        .detach();
                    }
                })
                .detach();
            }
        });
    // The server thread lives until the test process exits.
    let _handle = match spawned {
        Ok(h) => h,
        Err(e) => panic!("h2 server executor: {e}"),
    };
    let addr = match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Some(a)) => a,
        other => panic!("h2 server did not start: {other:?}"),
    };
    std::mem::forget(_handle);
    (addr, count)
}

#[test]
fn http2_multiplexes_streams_and_counts_match_the_server() {
    let (addr, served) = h2_server(1000);
    let r = run(&LoadConfig {
        connections: 2,
        streams: 8,
        http2: true,
        requests: Some(1000),
        body_size: 100,
        method: "POST".into(),
        ..cfg(addr, "/")
    });
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!((r.requests, r.status_2xx, r.bytes), (1000, 1000, 1_000_000));
    assert_eq!(r.connections_opened, 2);
    assert_eq!(served.load(Ordering::Relaxed), 1000);

    let r = run(&LoadConfig {
        connections: 1,
        streams: 4,
        http2: true,
        requests: None,
        duration: Some(Duration::from_millis(500)),
        rate: Some(1000.0),
        ..cfg(addr, "/")
    });
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert!(
        (400..=520).contains(&r.requests),
        "rate held: {}",
        r.requests
    );
}

#[test]
fn the_binary_prints_json_and_writes_an_hdr_log() {
    let o = origin();
    let dir = std::env::temp_dir().join(format!("ringway-bench-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let hdr = dir.join("latency.hdr");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringway-bench"))
        .args(["-c", "2", "-n", "200", "--cpus", "0-1", "--json", "-q"])
        .arg("--hdr-out")
        .arg(&hdr)
        .arg(format!("http://{}/size/10", o.addr()))
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run ringway-bench: {e}"),
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(j) => j,
        Err(e) => panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)),
    };
    assert_eq!(json["requests"], 200);
    assert_eq!(json["status"]["2xx"], 200);
    assert_eq!(json["bytes"], 2000);
    assert!(json["latency_us"]["p999"].as_u64().is_some_and(|v| v > 0));
    let log = std::fs::read_to_string(&hdr).unwrap_or_default();
    assert!(
        log.contains("#[StartTime:") && log.contains("HIST"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A flag error names the flag and exits non-zero.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_ringway-bench"))
        .args(["-d", "soon", "http://127.0.0.1:1/"])
        .output();
    assert!(bad.is_ok_and(
        |b| !b.status.success() && String::from_utf8_lossy(&b.stderr).contains("duration")
    ));
}
