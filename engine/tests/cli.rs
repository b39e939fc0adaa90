//! The `ringway` command line: bad flags and config name the flag and exit 2,
//! `check-config`, `--version` and `--help` exit 0, and SIGTERM drains an in-flight
//! request before exiting 0.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `ringway ARGS` to completion (killed after 20 s); returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringway");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringway {args:?} still running after 20 s (it should have exited)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), t_out.join().unwrap(), t_err.join().unwrap())
}

#[test]
fn bad_flags_name_the_flag_and_exit_2() {
    let dir = temp_path("cfg");
    std::fs::create_dir_all(&dir).unwrap();
    let unknown_key = dir.join("unknown-key.toml");
    std::fs::write(
        &unknown_key,
        "backend = [\"127.0.0.1:1\"]\nbogus_setting = 3\n",
    )
    .unwrap();
    let bad_value = dir.join("bad-value.toml");
    std::fs::write(
        &bad_value,
        "backend = [\"127.0.0.1:1\"]\ntimeout-connect = \"soon\"\n",
    )
    .unwrap();
    let missing = dir.join("does-not-exist.toml");
    let (unknown_key, bad_value, missing) = (
        unknown_key.to_str().unwrap().to_string(),
        bad_value.to_str().unwrap().to_string(),
        missing.to_str().unwrap().to_string(),
    );

    const B: &str = "127.0.0.1:1";
    const L: &str = "127.0.0.1:0";
    // (arguments, text stderr must contain)
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--listen", L], "--backend"),
        (
            vec!["--backend", B, "--listen", L, "--cpus", "3-1"],
            "--cpus",
        ),
        (
            vec!["--backend", B, "--listen", L, "--cpus", "zero"],
            "--cpus",
        ),
        (vec!["--backend", B, "--listen", "nope"], "--listen"),
        (vec!["--backend", B, "--listen", "127.0.0.1"], "--listen"),
        (vec!["--backend", "nope", "--listen", L], "--backend"),
        (
            vec!["--backend", "bad name=127.0.0.1:1", "--listen", L],
            "--backend",
        ),
        (
            vec!["--backend", B, "--listen", L, "--timeout-connect", "xyz"],
            "--timeout-connect",
        ),
        (
            vec![
                "--backend",
                B,
                "--listen",
                L,
                "--timeout-client-head",
                "5 parsecs",
            ],
            "--timeout-client-head",
        ),
        (
            vec!["--backend", B, "--listen", L, "--timeout-backend", "0s"],
            "--timeout-backend",
        ),
        (
            vec!["--backend", B, "--listen", L, "--grace=-1s"],
            "--grace",
        ),
        (
            vec!["--backend", B, "--listen", L, "--reuse", "sometimes"],
            "--reuse",
        ),
        (
            vec!["--backend", B, "--listen", L, "--max-head", "lots"],
            "--max-head",
        ),
        (
            vec!["--backend", B, "--listen", L, "--max-head", "1"],
            "--max-head",
        ),
        (
            vec!["--backend", B, "--listen", L, "--shards", "0"],
            "--shards",
        ),
        (
            vec!["--backend", B, "--listen", L, "--shards", "two"],
            "--shards",
        ),
        (
            vec!["--backend", B, "--listen", L, "--route", "nothing"],
            "--route",
        ),
        (
            vec!["--backend", B, "--listen", L, "--route", "a.test=nosuch"],
            "--route",
        ),
        (
            vec!["--backend", B, "--listen", L, "--default-backend", "nosuch"],
            "--default-backend",
        ),
        (
            vec!["--backend", B, "--listen", L, "--admin", "nowhere"],
            "--admin",
        ),
        (
            vec!["--backend", B, "--listen", L, "--takeover", "maybe"],
            "--takeover",
        ),
        (
            vec!["--backend", B, "--listen", L, "--no-such-flag"],
            "--no-such-flag",
        ),
        (
            vec!["--backend", B, "--listen", L, "--timeout-client-idle", "x"],
            "--timeout-client-idle",
        ),
        (
            vec!["--backend", B, "--listen", L, "--takeover-timeout", "x"],
            "--takeover-timeout",
        ),
        (
            vec!["--backend", B, "--listen", L, "--spin-before-park", "x"],
            "--spin-before-park",
        ),
        (
            vec!["--backend", B, "--listen", L, "--pool-purge-delay", "0s"],
            "--pool-purge-delay",
        ),
        (
            vec!["--backend", B, "--listen", L, "--pool-max-idle", "x"],
            "--pool-max-idle",
        ),
        (
            vec!["--backend", B, "--listen", L, "--pool-max-idle", "99999999"],
            "--pool-max-idle",
        ),
        (
            vec!["--backend", B, "--listen", L, "--max-reuse", "x"],
            "--max-reuse",
        ),
        (
            vec!["--backend", B, "--listen", L, "--pool-low-idle", "x"],
            "--pool-low-idle",
        ),
        (
            vec!["--backend", B, "--listen", L, "--max-conns-per-shard", "0"],
            "--max-conns-per-shard",
        ),
        (
            vec!["--backend", B, "--listen", L, "--fault", "bogus=1%"],
            "--fault",
        ),
        (
            vec!["--backend", B, "--listen", L, "--fault-seed", "x"],
            "--fault-seed",
        ),
        (
            vec!["--backend", B, "--listen", L, "--log", "nonsense[["],
            "--log",
        ),
        (
            vec!["--backend", B, "--listen", L, "--cpus", "9999"],
            "--cpus",
        ),
        (
            vec![
                "--backend",
                B,
                "--listen",
                L,
                "--cpus",
                "0",
                "--shards",
                "2",
            ],
            "--shards",
        ),
        (
            vec![
                "--backend",
                "a=127.0.0.1:2",
                "--backend",
                "a=127.0.0.1:3",
                "--listen",
                L,
            ],
            "--backend",
        ),
        (
            vec!["--listen", L, "--config", &unknown_key],
            "bogus_setting",
        ),
        (
            vec!["--listen", L, "--config", &bad_value],
            "timeout-connect",
        ),
        (vec!["--listen", L, "--config", &missing], "--config"),
    ];
    let mut failures = Vec::new();
    for (args, needle) in &cases {
        let (code, _out, err) = run(args);
        if code != Some(2) || !err.contains(needle) || err.contains("panicked") {
            failures.push(format!(
                "ringway {args:?}: exit {code:?}, stderr should name {needle:?}:\n{err}"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn check_config_prints_the_setup_and_exits_0() {
    let (code, out, err) = run(&[
        "check-config",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "api=127.0.0.1:9001,127.0.0.1:9002",
        "--backend",
        "web=127.0.0.1:9003",
        "--route",
        "api.test/v1=api",
        "--shards",
        "3",
        "--timeout-connect",
        "250ms",
    ]);
    assert_eq!(code, Some(0), "stderr:\n{err}");
    for needle in [
        "127.0.0.1:9001",
        "127.0.0.1:9002",
        "127.0.0.1:9003",
        "api",
        "web",
        "3 unpinned shard",
    ] {
        assert!(
            out.contains(needle),
            "check-config output lacks {needle:?}:\n{out}"
        );
    }

    // Settings from a file, with flags winning over it.
    let file = TempFile(temp_path("check.toml"));
    std::fs::write(
        &file.0,
        "backend = [\"filebackend=127.0.0.1:9100\"]\nshards = 2\nlisten = [\"127.0.0.1:0\"]\n",
    )
    .unwrap();
    let path = file.0.to_str().unwrap();
    let (code, out, err) = run(&["check-config", "--config", path]);
    assert_eq!(code, Some(0), "stderr:\n{err}");
    assert!(
        out.contains("filebackend") && out.contains("127.0.0.1:9100"),
        "{out}"
    );
    assert!(out.contains("2 unpinned shard"), "{out}");
    let (code, out, err) = run(&["check-config", "--config", path, "--shards", "1"]);
    assert_eq!(code, Some(0), "stderr:\n{err}");
    assert!(
        out.contains("1 unpinned shard"),
        "the flag did not win over the file:\n{out}"
    );
}

#[test]
fn config_file_errors_name_the_file_the_line_and_the_key() {
    let file = TempFile(temp_path("lines.toml"));
    std::fs::write(
        &file.0,
        "backend = [\"127.0.0.1:1\"]\n# a comment\nmax-head = \"lots\"\n",
    )
    .unwrap();
    let path = file.0.to_str().unwrap();
    let (code, _out, err) = run(&["check-config", "--config", path]);
    assert_eq!(code, Some(2), "stderr:\n{err}");
    assert!(
        err.contains("max-head: 'lots' is not a size") && err.contains(&format!("{path}, line 3")),
        "{err}"
    );
    // A flag still wins over the (valid) file, and the summary shows where things went.
    std::fs::write(&file.0, "backend = [\"127.0.0.1:1\"]\nmax-head = 2048\n").unwrap();
    let (code, out, err) = run(&["check-config", "--config", path, "--max-head", "4KiB"]);
    assert_eq!(code, Some(0), "stderr:\n{err}");
    assert!(out.contains("max head 4096 bytes"), "{out}");
}

#[test]
fn version_and_help_exit_0() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    assert!(out.contains("ringway"), "{out}");

    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--listen",
        "--backend",
        "--route",
        "--cpus",
        "--shards",
        "--admin",
        "--grace",
        "check-config",
    ] {
        assert!(out.contains(flag), "--help does not mention {flag}:\n{out}");
    }
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--grace", "5s"]);
    let addr = proxy.addr;
    let slow = std::thread::spawn(move || {
        let mut c = Conn::connect(addr);
        c.get("/delay/500")
    });
    wait_until(
        Duration::from_secs(10),
        "the slow request to reach the origin",
        || origin.stats().requests_total == 1,
    );
    let stopped_at = Instant::now();
    proxy.signal(libc::SIGTERM);
    let r = slow.join().expect("client thread");
    assert_eq!(r.status, 200, "in-flight request during drain");
    assert_eq!(r.body, b"hello, world\n");
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("ringway exits after draining");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "drain waited for the whole grace period"
    );
    let err = proxy.stderr();
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn sigterm_when_idle_exits_0_promptly() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--grace", "5s"]);
    // An idle keep-alive client must not hold the drain for the whole grace period.
    let mut c = proxy.connect();
    assert_eq!(c.get("/").status, 200);
    let started = Instant::now();
    let status = proxy.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "idle proxy took {:?} to stop",
        started.elapsed()
    );
}
