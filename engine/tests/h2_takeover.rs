//! Takeover of idle HTTP/2 backend connections between shards, end to end, against nginx
//! as the h2c origin (an origin that is not ours: its own `stub_status` counts say
//! whether a connection moved or a new one was opened). The case ringway exists for:
//! HAProxy's use-after-free when taking over an idle HTTP/2 connection failed half-way.
//!
//! Clients are steered to a shard with `--listen ADDR@SHARD`; HTTP/1.1 clients are raw
//! sockets, HTTP/2 clients are `curl --http2-prior-knowledge` (one request per
//! connection: Debian's curl 7.88 breaks on a second request on a reused HTTP/2
//! connection, against nginx too) or an `h2` client.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn total(m: &str, name: &str) -> u64 {
    metric(m, &format!("{name}{{shard=\"all\"}}"))
}

/// Idle (pooled) backend connections of `shard` to nginx.
fn idle_on(m: &str, shard: usize, nginx: &NginxH2c) -> u64 {
    let s = nginx.addr();
    ["idle_cur", "safe_cur"]
        .iter()
        .map(|k| {
            metric(
                m,
                &format!(
                    "ringway_server_{k}{{shard=\"{shard}\",backend=\"default\",server=\"{s}\"}}"
                ),
            )
        })
        .sum()
}

/// Two shards, one listener each, in front of nginx over h2c, reuse `always`.
fn two_shards(nginx: &NginxH2c, extra: &[&str]) -> Proxy {
    let backend = nginx.backend();
    let mut args = vec![
        "--backend",
        &backend,
        "--shards",
        "2",
        "--listen",
        "127.0.0.1:0@0",
        "--listen",
        "127.0.0.1:0@1",
        "--reuse",
        "always",
    ];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

/// One HTTP/1.1 GET of `/?t=TOKEN`; the answer must be nginx's and name the token.
fn get_token(addr: std::net::SocketAddr, token: &str) -> u16 {
    let mut c = Conn::connect(addr);
    let r = c.get(&format!("/?t={token}"));
    if r.status == 200 {
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            body.starts_with(&format!("tok={token} ")),
            "answer for {token} carries {body:?}"
        );
    }
    r.status
}

/// `n` HTTP/1.1 GETs on one keep-alive connection to `addr`, each with its own token.
fn h1_burst(addr: std::net::SocketAddr, tag: &str, n: usize) -> Vec<u16> {
    let mut c = Conn::connect(addr);
    (0..n)
        .map(|i| {
            let token = format!("{tag}-{i}");
            let r = c.get(&format!("/?t={token}"));
            if r.status == 200 {
                let body = String::from_utf8_lossy(&r.body);
                assert!(
                    body.starts_with(&format!("tok={token} ")),
                    "answer for {token} carries {body:?}"
                );
            }
            r.status
        })
        .collect()
}

/// Waits until `shard` holds at least one idle connection to nginx; the metrics then.
fn wait_idle_on(proxy: &Proxy, shard: usize, nginx: &NginxH2c) -> String {
    wait_for(
        Duration::from_secs(5),
        &format!("an idle HTTP/2 connection on shard {shard}"),
        || {
            let m = proxy.metrics();
            (idle_on(&m, shard, nginx) > 0).then_some(m)
        },
    )
}

#[test]
fn idle_h2_connections_move_to_the_shard_that_needs_them() {
    let nginx = NginxH2c::start("move", 1_000_000);
    let mut proxy = two_shards(
        &nginx,
        &["--pool-purge-delay", "60s", "--takeover-timeout", "200ms"],
    );
    let (on0, on1) = (proxy.listeners[0], proxy.listeners[1]);

    // Phase 1: clients on shard 0 only; its HTTP/2 connection goes idle into its pool.
    for i in 0..4 {
        assert!(h1_burst(on0, &format!("a{i}"), 10)
            .iter()
            .all(|&s| s == 200));
    }
    let m = wait_idle_on(&proxy, 0, &nginx);
    assert_eq!(idle_on(&m, 1, &nginx), 0);
    assert_eq!(total(&m, "ringway_takeover_granted_total"), 0);
    let (accepts, open) = nginx.counts();
    assert!(accepts >= 1, "nginx saw no connection");

    // Phase 2: clients on shard 1, which has nothing: it takes shard 0's over.
    for i in 0..4 {
        assert!(h1_burst(on1, &format!("b{i}"), 10)
            .iter()
            .all(|&s| s == 200));
    }
    let m = wait_idle_on(&proxy, 1, &nginx);
    let granted = total(&m, "ringway_takeover_granted_total");
    assert!(granted > 0, "no takeover happened:\n{m}");
    assert_eq!(
        nginx.counts(),
        (accepts, open),
        "shard 1 opened a new HTTP/2 connection instead of taking one over"
    );
    assert_eq!(total(&m, "ringway_takeover_handed_over_total"), granted);

    // Phase 3: back to shard 0, over HTTP/2 clients this time: the connection moves back.
    for i in 0..3 {
        let url = proxy.url(&format!("/?t=c{i}"));
        let body = curl_ok(&["-s", "--http2-prior-knowledge", &url]);
        let body = String::from_utf8_lossy(&body);
        assert!(body.starts_with(&format!("tok=c{i} ")), "{body}");
    }
    let url0 = format!("http://{on0}/?t=d");
    let body = curl_ok(&["-s", "--http2-prior-knowledge", &url0]);
    assert!(String::from_utf8_lossy(&body).starts_with("tok=d "));
    let m = proxy.metrics();
    assert!(
        total(&m, "ringway_takeover_granted_total") > granted,
        "the connection did not move back:\n{m}"
    );
    assert_eq!(
        nginx.counts(),
        (accepts, open),
        "a new connection was opened instead"
    );
    proxy.assert_healthy();
}

/// A failure injected at each step of an HTTP/2 takeover: the request is still served,
/// and the connection ends up usable on exactly one shard (or, for a failure after it
/// moved, closed): ringway's connections and nginx's open connections agree, and no
/// shard holds one that nginx has closed.
#[test]
fn a_failure_at_any_step_leaves_the_connection_on_exactly_one_shard() {
    for point in ["reserve", "channel-full", "grant-delay", "adopt"] {
        let nginx = NginxH2c::start(&format!("fault-{point}"), 1_000_000);
        let fault = format!("{point}=100%");
        let mut proxy = two_shards(
            &nginx,
            &[
                "--pool-purge-delay",
                "60s",
                "--takeover-timeout",
                "100ms",
                "--fault",
                &fault,
            ],
        );
        let (on0, on1) = (proxy.listeners[0], proxy.listeners[1]);
        assert_eq!(get_token(on0, &format!("{point}-0")), 200);
        wait_idle_on(&proxy, 0, &nginx);
        let (accepts, _) = nginx.counts();

        // Shard 1 needs a connection; the injected failure stops the takeover.
        assert_eq!(get_token(on1, &format!("{point}-1")), 200, "{point}");
        let m = wait_for(Duration::from_secs(5), "the takeover to settle", || {
            let m = proxy.metrics();
            (total(&m, "ringway_takeover_pending") == 0
                && total(&m, "ringway_inflight_requests") == 0)
                .then_some(m)
        });
        assert!(
            metric(
                &m,
                &format!("ringway_faults_injected_total{{point=\"{point}\"}}")
            ) > 0,
            "{point} never fired:\n{m}"
        );
        // It connected anew (the takeover failed).
        assert_eq!(nginx.counts().0, accepts + 1, "{point}");

        let (idle0, idle1) = (idle_on(&m, 0, &nginx), idle_on(&m, 1, &nginx));
        match point {
            // Failed before the hand-over: the connection never left shard 0 and still
            // serves there without a new connect.
            "reserve" | "channel-full" => {
                assert_eq!((idle0, idle1), (1, 1), "{point}:\n{m}");
                assert_eq!(get_token(on0, &format!("{point}-2")), 200);
                assert_eq!(nginx.counts().0, accepts + 1, "{point}: shard 0 lost it");
            }
            // The grant came after the taker gave up: adopted idle there (I5), so both
            // connections are on shard 1 now and shard 0 has none.
            "grant-delay" => {
                let m = wait_for(Duration::from_secs(5), "the late grant", || {
                    let m = proxy.metrics();
                    (total(&m, "ringway_late_grant_adopted_total") > 0).then_some(m)
                });
                assert_eq!(
                    (idle_on(&m, 0, &nginx), idle_on(&m, 1, &nginx)),
                    (0, 2),
                    "{point}:\n{m}"
                );
                // The adopted connection serves on shard 1: no new connect.
                assert!(h1_burst(on1, point, 5).iter().all(|&s| s == 200));
                assert_eq!(nginx.counts().0, accepts + 1, "{point}");
            }
            // Failed after the fd moved: only the connection's own I/O may fail (I2); the
            // fault plays that failure, so the moved connection is closed on shard 1.
            "adopt" => {
                assert_eq!((idle0, idle1), (0, 1), "{point}:\n{m}");
            }
            _ => unreachable!(),
        }
        // ringway and nginx agree on the number of open connections.
        let m = proxy.metrics();
        let held = idle_on(&m, 0, &nginx) + idle_on(&m, 1, &nginx);
        wait_until(Duration::from_secs(5), "nginx to agree", || {
            nginx.counts().1 == held
        });
        proxy.assert_healthy();
    }
}

/// An HTTP/2 client (the `h2` crate on a glommio executor of its own) fetching
/// `/?t=TAG-i` for i in 0..n as concurrent streams on one connection; returns the
/// statuses, checking that every 200 carries its own token. Any stream or connection
/// error is an error: a request must never be lost.
/// Runs on the caller's glommio executor; the connection is closed before it returns.
async fn h2_burst(addr: std::net::SocketAddr, tag: &str, n: usize) -> Result<Vec<u16>, String> {
    let tag = tag.to_string();
    {
        {
            let stream = glommio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (send, conn) = h2::client::Builder::new()
                .handshake::<_, bytes::Bytes>(ringway_h2mux::io::TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let driver = glommio::spawn_local(async move {
                let _ = conn.await;
            });
            let one = |i: usize| {
                let send = send.clone();
                let token = format!("{tag}-{i}");
                async move {
                    let mut ready = send.ready().await.map_err(|e| format!("{token}: {e}"))?;
                    let req = http::Request::get(format!("http://test/?t={token}"))
                        .body(())
                        .map_err(|e| e.to_string())?;
                    let (resp, _) = ready
                        .send_request(req, true)
                        .map_err(|e| format!("{token}: {e}"))?;
                    let resp = resp.await.map_err(|e| format!("{token} lost: {e}"))?;
                    let status = resp.status().as_u16();
                    let mut body = resp.into_body();
                    let mut text = Vec::new();
                    while let Some(chunk) = body.data().await {
                        let chunk = chunk.map_err(|e| format!("{token} body: {e}"))?;
                        let _ = body.flow_control().release_capacity(chunk.len());
                        text.extend_from_slice(&chunk);
                    }
                    let text = String::from_utf8_lossy(&text);
                    if status == 200 && !text.starts_with(&format!("tok={token} ")) {
                        return Err(format!("answer for {token} carries {text:?}"));
                    }
                    Ok::<u16, String>(status)
                }
            };
            let tasks: Vec<_> = (0..n).map(|i| glommio::spawn_local(one(i))).collect();
            let mut statuses = Vec::with_capacity(n);
            let mut failed = None;
            for t in tasks {
                match t.await {
                    Ok(s) => statuses.push(s),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            // Every handle gone: h2 sends GOAWAY and the driver ends, closing the socket.
            drop(send);
            driver.await;
            match failed {
                Some(e) => Err(e),
                None => Ok(statuses),
            }
        }
    }
}

/// Answers counted by a soak's clients.
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    unavailable: AtomicU64,
}

impl Tally {
    /// Counts a round's statuses; anything but 200 or 503 is an error.
    fn count(&self, statuses: Vec<u16>) -> Result<(), String> {
        for s in statuses {
            self.sent.fetch_add(1, Ordering::Relaxed);
            match s {
                200 => self.ok.fetch_add(1, Ordering::Relaxed),
                503 => self.unavailable.fetch_add(1, Ordering::Relaxed),
                s => return Err(format!("unexpected status {s}")),
            };
        }
        Ok(())
    }
}

/// `n` keep-alive HTTP/1.1 GETs of `/?t=TAG-k` on one connection; every 200 must carry
/// its own token.
fn h1_round(addr: std::net::SocketAddr, tag: &str, n: usize) -> Result<Vec<u16>, String> {
    use std::io::Write;
    let mut c = Conn::connect(addr);
    let mut v = Vec::with_capacity(n);
    for k in 0..n {
        let token = format!("{tag}-{k}");
        c.stream
            .write_all(format!("GET /?t={token} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .map_err(|e| format!("request lost: {e}"))?;
        let r = c
            .try_read_response(false)
            .map_err(|e| format!("request lost: {e}"))?;
        if r.status == 200
            && !String::from_utf8_lossy(&r.body).starts_with(&format!("tok={token} "))
        {
            return Err(format!("{token} got {:?}", r.body));
        }
        v.push(r.status);
    }
    Ok(v)
}

/// The soak of the issue: for a while (30 s by default, `RINGWAY_SOAK_SECS` to change it)
/// HTTP/1.1 and HTTP/2 clients alternate between the shards under
/// `reserve=20%,grant-delay=20%,channel-full=20%,connect=5%,adopt=10%`: every answer is
/// 200 or 503 and carries its own request's token, fds come back to the baseline, the
/// takeover counters add up, and nginx's open connections come back to none.
#[test]
fn h2_takeover_faults_lose_nothing_and_leak_nothing() {
    let secs: u64 = std::env::var("RINGWAY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let nginx = NginxH2c::start("soak", 1_000_000);
    let mut proxy = two_shards(
        &nginx,
        &[
            "--pool-purge-delay",
            "300ms",
            "--pool-max-idle",
            "3",
            // Connections wear out after 16 streams, so the shard the clients just moved
            // to keeps needing connections while the other one holds idle ones.
            "--max-reuse",
            "16",
            "--takeover-timeout",
            "2ms",
            "--fault",
            "reserve=20%,grant-delay=20%,channel-full=20%,connect=5%,adopt=10%",
            "--fault-seed",
            "11",
        ],
    );
    let baseline = metric(&proxy.metrics(), "ringway_open_fds");
    let listeners = proxy.listeners.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let counters = Arc::new(Tally {
        sent: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        unavailable: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (stop, tally) = (stop.clone(), counters.clone());
            let listeners = listeners.clone();
            // Every 200 ms the clients move to the other shard, so idle connections keep
            // sitting on the wrong one.
            let addr_now = move || listeners[(started.elapsed().as_millis() / 200) as usize % 2];
            std::thread::spawn(move || -> Result<(), String> {
                if i % 2 == 0 {
                    let mut round = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let n = 3 + (i + round) % 8;
                        tally.count(h1_round(addr_now(), &format!("c{i}r{round}"), n)?)?;
                        round += 1;
                    }
                    return Ok(());
                }
                // An HTTP/2 client: one glommio executor on this thread, made once.
                let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                    .io_memory(64 << 10)
                    .make()
                    .map_err(|e| format!("executor: {e}"))?;
                ex.run(async move {
                    let mut round = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let n = 3 + (i + round) % 8;
                        tally.count(h2_burst(addr_now(), &format!("c{i}r{round}"), n).await?)?;
                        round += 1;
                    }
                    Ok(())
                })
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join()
            .expect("client thread")
            .expect("every request answered with its own answer");
    }
    let (sent, ok, unavailable) = (
        counters.sent.load(Ordering::Relaxed),
        counters.ok.load(Ordering::Relaxed),
        counters.unavailable.load(Ordering::Relaxed),
    );
    assert_eq!(sent, ok + unavailable);
    assert!(ok > sent / 2, "too few proxied answers: {ok} of {sent}");
    proxy.assert_healthy();

    let m = wait_for(Duration::from_secs(20), "fds back to the baseline", || {
        let m = proxy.metrics();
        (metric(&m, "ringway_open_fds") <= baseline).then_some(m)
    });
    let asked = total(&m, "ringway_takeover_asked_total");
    let granted = total(&m, "ringway_takeover_granted_total");
    let denied = total(&m, "ringway_takeover_denied_total");
    let timeout = total(&m, "ringway_takeover_timeout_total");
    let failed = total(&m, "ringway_takeover_failed_total");
    let pending = total(&m, "ringway_takeover_pending");
    assert!(asked > 0 && granted > 0, "takeover never happened:\n{m}");
    assert_eq!(
        granted + denied + timeout + failed + pending,
        asked,
        "takeover counters do not add up:\n{m}"
    );
    assert_eq!(pending, 0);
    for point in ["reserve", "grant-delay", "channel-full", "connect", "adopt"] {
        assert!(
            metric(
                &m,
                &format!("ringway_faults_injected_total{{point=\"{point}\"}}")
            ) > 0,
            "fault {point} never fired"
        );
    }
    assert_eq!(total(&m, "ringway_inflight_requests"), 0);
    wait_until(Duration::from_secs(5), "nginx's connections closed", || {
        nginx.counts().1 == 0
    });
    eprintln!(
        "h2 soak: {sent} requests ({unavailable} x 503) in {secs}s; takeover asked {asked}, granted {granted}, denied {denied}, timeout {timeout}, failed {failed}; late grants adopted {}",
        total(&m, "ringway_late_grant_adopted_total")
    );
    proxy.terminate();
}
