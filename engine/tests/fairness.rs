//! No client can stall a shard: HTTP/2 connections flooding frames that carry no request
//! (WINDOW_UPDATE, PRIORITY, unknown types, PINGs whose answers they read) are cut with
//! GOAWAY(ENHANCE_YOUR_CALM) while another client on the same shard keeps being served
//! and `/metrics` keeps answering; an HTTP/1.1 client pipelining thousands of requests
//! ringway answers itself does not hold the shard either.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// 64 KiB of one kind of cheap frame.
fn flood_chunk(kind: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0u32;
    while out.len() < 64 << 10 {
        i += 1;
        out.extend(match kind {
            "window_update" => frame(8, 0, 0, &1u32.to_be_bytes()),
            "priority" => frame(2, 0, 2 * i + 1, &[0, 0, 0, 0, 16]),
            "unknown" => frame(0xfa, 0, 0, &[]),
            _ => frame(6, 0, 0, &i.to_be_bytes().repeat(2)),
        });
    }
    out
}

/// Floods `addr` with `kind` frames until the server closes; returns whether a GOAWAY
/// with ENHANCE_YOUR_CALM (0xb) arrived before the close.
fn flood(
    addr: SocketAddr,
    kind: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Option<u32>> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = s.try_clone().unwrap();
        // The reader takes whatever the server sends (PING ACKs included) and looks for GOAWAY.
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                // Parse complete frames; keep the rest.
                let mut at = 0;
                while buf.len() >= at + 9 {
                    let len = u32::from_be_bytes([0, buf[at], buf[at + 1], buf[at + 2]]) as usize;
                    if buf.len() < at + 9 + len {
                        break;
                    }
                    if buf[at + 3] == 7 && len >= 8 {
                        let code = u32::from_be_bytes(buf[at + 13..at + 17].try_into().unwrap());
                        return Some(code);
                    }
                    at += 9 + len;
                }
                buf.drain(..at);
            }
            None
        });
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(4, 0, 0, &[]));
        if s.write_all(&hello).is_ok() {
            let chunk = flood_chunk(kind);
            // Bounded; the server cuts each flood long before.
            let deadline = Instant::now() + Duration::from_secs(15);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        reader.join().unwrap_or(None)
    })
}

#[test]
fn h2_frame_floods_are_cut_and_do_not_stall_the_shard() {
    let o = origin();
    let backend = o.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--shards", "1"]);
    let addr = proxy.addr;
    // Baseline: the victim's requests before any flood.
    let mut victim = proxy.connect();
    for _ in 0..50 {
        assert_eq!(victim.get("/").status, 200);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = ["window_update", "priority", "unknown", "ping"]
        .into_iter()
        .map(|k| (k, flood(addr, k, stop.clone())))
        .collect();
    // During the flood the victim is served and /metrics answers, promptly.
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        assert_eq!(victim.get("/").status, 200);
        worst = worst.max(t.elapsed());
        served += 1;
    }
    let t = Instant::now();
    let m = proxy.metrics();
    let metrics_took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let calmed: Vec<(&str, Option<u32>)> = flooders
        .into_iter()
        .map(|(k, h)| (k, h.join().expect("flooder")))
        .collect();
    eprintln!("victim: {served} requests during the flood, worst {worst:?}; /metrics in {metrics_took:?}; flooders {calmed:?}");
    assert!(
        worst < Duration::from_millis(500),
        "a request waited {worst:?} behind the flood"
    );
    assert!(
        metrics_took < Duration::from_secs(1),
        "/metrics took {metrics_took:?}"
    );
    // Each flooder was cut by the server (counted below as a budget close); the GOAWAY
    // that comes first says ENHANCE_YOUR_CALM. (A flooder still writing when the server
    // closes gets a reset, which can discard the GOAWAY before it is read: that one only
    // shows in the counter.)
    for (kind, got) in &calmed {
        assert!(
            matches!(got, None | Some(0xb)),
            "the {kind} flood got GOAWAY {got:?}, not ENHANCE_YOUR_CALM"
        );
    }
    assert!(
        calmed.iter().any(|(_, g)| *g == Some(0xb)),
        "no flooder saw GOAWAY(ENHANCE_YOUR_CALM): {calmed:?}"
    );
    let m2 = wait_for(Duration::from_secs(5), "the floods counted", || {
        let m = proxy.metrics();
        let n: u64 = m
            .lines()
            .filter(|l| {
                l.starts_with("ringway_h2_flood_closed_total{") && !l.contains("shard=\"all\"")
            })
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<u64>().ok()))
            .sum();
        (n >= 4).then_some(m)
    });
    drop((m, m2));
    proxy.assert_healthy();
}

#[test]
fn pipelined_local_answers_do_not_hold_the_shard() {
    let o = origin();
    let backend = o.addr().to_string();
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--default-backend",
        "none",
        "--shards",
        "1",
    ]);
    let addr = proxy.addr;
    let stop = Arc::new(AtomicBool::new(false));
    // Two clients pipeline 404s (ringway answers itself) as fast as they can.
    let pipeliners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let mut r = s.try_clone().unwrap();
                std::thread::spawn(move || {
                    let mut b = [0u8; 65536];
                    while matches!(r.read(&mut b), Ok(n) if n > 0) {}
                });
                let burst = b"GET /nothing HTTP/1.1\r\nHost: none.test\r\n\r\n".repeat(1000);
                while !stop.load(Ordering::Relaxed) {
                    if s.write_all(&burst).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    let mut victim = Conn::connect(addr);
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        let r = victim.request("GET", "/", &[("Host", "none.test")], None);
        assert_eq!(r.status, 404);
        worst = worst.max(t.elapsed());
    }
    let t = Instant::now();
    let _ = proxy.metrics();
    let metrics_took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for p in pipeliners {
        let _ = p.join();
    }
    eprintln!("pipelining: victim worst {worst:?}, /metrics in {metrics_took:?}");
    assert!(
        worst < Duration::from_millis(500),
        "a request waited {worst:?} behind pipelined 404s"
    );
    assert!(metrics_took < Duration::from_secs(1));
    proxy.assert_healthy();
}
