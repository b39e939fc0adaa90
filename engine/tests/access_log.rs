//! The access log through the real binary: one line per request whose fields match what
//! the client and the origin saw, JSON that parses, a writer that cannot keep up drops
//! and counts lines while requests go on, and SIGUSR1 reopens the file.

mod common;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use common::*;

fn lines_of(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    wait_for(
        Duration::from_secs(10),
        &format!("{n} access log lines"),
        || {
            let l = lines_of(path);
            (l.len() >= n).then_some(l)
        },
    )
}

/// One curl run over one keep-alive connection: (status, head bytes, body bytes) per URL.
fn curl_each(urls: &[String]) -> Vec<(u16, u64, u64)> {
    let mut args = vec!["-w", "%{http_code} %{size_header} %{size_download}\\n"];
    for u in urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    String::from_utf8(curl_ok(&args))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            (v[0] as u16, v[1], v[2])
        })
        .collect()
}

#[test]
fn n_requests_give_n_lines_that_match_the_client_and_the_origin() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let file = TempFile(temp_path("access.log"));
    let path = file.0.to_str().unwrap();
    let proxy = Proxy::start(&[
        "--backend",
        &format!("api={backend}"),
        "--route",
        "*/size=api",
        "--route",
        "*/status=api",
        "--default-backend",
        "none",
        "--access-log",
        path,
    ]);
    let base = format!("http://{}", proxy.addr);
    let urls: Vec<String> = (0..10)
        .map(|i| format!("{base}/size/{}", 100 * i))
        .chain([format!("{base}/status/503"), format!("{base}/nowhere")])
        .collect();
    let seen = curl_each(&urls);
    assert_eq!(seen.len(), 12);
    let lines = wait_lines(&file.0, 12);
    assert_eq!(lines.len(), 12, "{lines:#?}");
    let mut new = 0;
    for (i, (line, (status, head, body))) in lines.iter().zip(&seen).enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        // client [date] shard front backend/server timers status bytes conn term "request"
        assert_eq!(f[0], "127.0.0.1", "{line}");
        assert!(f[1].starts_with('[') && f[1].ends_with(']'), "{line}");
        assert_eq!((f[2], f[3]), ("0", "h1"), "{line}");
        assert_eq!(f[6], status.to_string(), "{line}");
        assert_eq!(
            f[7],
            (head + body).to_string(),
            "bytes the client got: {line}"
        );
        let timers: Vec<i64> = f[5].split('/').map(|t| t.parse().unwrap()).collect();
        assert_eq!(timers.len(), 5, "{line}");
        if i < 11 {
            assert_eq!(f[4], format!("api/{backend}"), "{line}");
            assert!(timers.iter().all(|&t| t >= 0), "{line}");
            assert!(matches!(f[8], "new" | "reused"), "{line}");
            new += usize::from(f[8] == "new");
            assert_eq!(f[9], "--", "{line}");
        } else {
            assert_eq!(f[4], "-/<NOSRV>", "{line}");
            assert_eq!((f[8], f[9]), ("-", "PR"), "{line}");
            assert_eq!(timers[1..4], [-1, -1, -1], "{line}");
        }
        let request = line.split_once(" \"").map(|x| x.1).unwrap_or_default();
        let target = urls[i].strip_prefix(&base).unwrap();
        assert_eq!(request, format!("GET {target} HTTP/1.1\""), "{line}");
    }
    // The origin saw one connection per `new`, and every other request reused one.
    let o = origin.stats();
    assert_eq!(o.requests_total, 11);
    assert_eq!(new as u64, o.connections_total, "{lines:#?}");
    assert_eq!(
        metric(
            &proxy.metrics(),
            "ringway_access_log_lines_total{shard=\"all\"}"
        ),
        12
    );
}

#[test]
fn json_lines_parse_and_carry_the_same_facts() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let file = TempFile(temp_path("access.json"));
    let path = file.0.to_str().unwrap();
    let proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--access-log",
        path,
        "--access-log-format",
        "json",
    ]);
    let base = format!("http://{}", proxy.addr);
    let seen = curl_each(&[format!("{base}/size/7"), format!("{base}/a%22b?q=\"x\"")]);
    let lines = wait_lines(&file.0, 2);
    for (line, (status, head, body)) in lines.iter().zip(&seen) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["status"], *status, "{line}");
        assert_eq!(v["bytes"], head + body, "{line}");
        assert_eq!(v["backend"], "default");
        assert_eq!(v["server"], backend.as_str());
        assert_eq!(v["front"], "h1");
        assert!(v["ta_ms"].is_u64() && v["tc_ms"].is_u64(), "{line}");
    }
    assert!(lines[0].contains("\"conn\":\"new\""), "{}", lines[0]);
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["conn"], "reused");
    assert_eq!(second["request"], "GET /a%22b?q=\"x\" HTTP/1.1");
}

#[test]
fn a_writer_that_cannot_keep_up_drops_and_counts_while_requests_go_on() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let fifo = TempFile(temp_path("access.fifo"));
    let c_path = std::ffi::CString::new(fifo.0.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // Our read end, opened (so the writer's open succeeds) but not read: the pipe fills.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo.0)
        .unwrap();
    let proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--access-log",
        fifo.0.to_str().unwrap(),
    ]);
    let mut c = proxy.connect();
    let mut sent = 0u64;
    wait_until(
        Duration::from_secs(120),
        "the access log to drop lines",
        || {
            for _ in 0..500 {
                assert_eq!(c.get("/").status, 200);
                sent += 1;
            }
            metric(
                &proxy.metrics(),
                "ringway_access_log_dropped_total{shard=\"all\"}",
            ) > 0
        },
    );
    // Requests keep going while the log is stuck.
    for _ in 0..200 {
        assert_eq!(c.get("/").status, 200);
        sent += 1;
    }
    assert_eq!(origin.stats().requests_total, sent);
    // Now read: every line not counted as dropped arrives, none more.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    wait_until(
        Duration::from_secs(30),
        "the logged lines to arrive",
        || {
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            let m = proxy.metrics();
            let lines = metric(&m, "ringway_access_log_lines_total{shard=\"all\"}");
            let dropped = metric(&m, "ringway_access_log_dropped_total{shard=\"all\"}");
            assert_eq!(lines, sent);
            let read = got.iter().filter(|&&b| b == b'\n').count() as u64;
            assert!(read <= lines - dropped, "read {read} > {lines} - {dropped}");
            read == lines - dropped
        },
    );
}

#[test]
fn sigusr1_reopens_the_access_log() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let file = TempFile(temp_path("rotate.log"));
    let rotated = TempFile(file.0.with_extension("log.1"));
    let proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--access-log",
        file.0.to_str().unwrap(),
    ]);
    let mut c = proxy.connect();
    assert_eq!(c.get("/first").status, 200);
    wait_lines(&file.0, 1);
    std::fs::rename(&file.0, &rotated.0).unwrap();
    proxy.signal(libc::SIGUSR1);
    wait_until(
        Duration::from_secs(10),
        "the log file to be reopened",
        || file.0.exists(),
    );
    assert_eq!(c.get("/second").status, 200);
    let now = wait_lines(&file.0, 1);
    assert!(now[0].contains("GET /second"), "{now:?}");
    let old = lines_of(&rotated.0);
    assert_eq!(old.len(), 1);
    assert!(old[0].contains("GET /first"), "{old:?}");
}

/// An access log file that cannot be opened (its directory does not exist) stops the
/// proxy before it announces a listener, naming the file: it used to print `listening
/// on` first and then exit, so a supervisor reading that line saw a proxy start and die.
#[test]
fn an_access_log_that_cannot_be_opened_stops_the_start_before_listening() {
    let origin = origin();
    let dir = temp_path("no-such-dir");
    let file = dir.join("access.log");
    let out = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--backend"])
        .arg(origin.addr().to_string())
        .arg("--access-log")
        .arg(&file)
        .output()
        .expect("run ringway");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stdout.contains("listening on"),
        "announced first: {stdout}"
    );
    assert!(
        stderr.contains("cannot open --access-log") && stderr.contains("access.log"),
        "{stderr}"
    );
}
