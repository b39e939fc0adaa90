//! What an operator meets on the command line: grouped `--help` with defaults and
//! values, `--version` with the build, log flags checked and JSON logs, the fd limit
//! warning, refusing an address another process listens on, a closed stdout, `demo`
//! taking only its own flags, and the man page and completions generated from the same
//! definition.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `ringway ARGS` to completion (killed after 20 s); returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringway");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `cmd` and waits until its stderr has a line containing `needle`; returns
/// everything read until then. The process is killed afterwards.
fn stderr_until(mut cmd: Command, needle: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(needle) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

#[test]
fn help_is_grouped_with_defaults_and_values() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    let order = [
        "Listeners:",
        "Backends and routing:",
        "Shards:",
        "Pool and takeover:",
        "Timeouts and limits:",
        "Logs and admin:",
        "Testing:",
    ];
    let mut at = 0;
    for heading in order {
        let i = out[at..]
            .find(heading)
            .unwrap_or_else(|| panic!("--help has no {heading:?} group after byte {at}:\n{out}"));
        at += i;
    }
    for needle in [
        "[default: 3s]",
        "[default: 127.0.0.1:8080]",
        "[default: stdout]",
        "never|safe|aggressive|always",
        "--access-log-format <text|json>",
        "--reuse-port-shared",
    ] {
        assert!(out.contains(needle), "--help lacks {needle:?}:\n{out}");
    }
    // The timeout flags sit in their group, not with the listeners.
    let limits = out.find("Timeouts and limits:").unwrap();
    let logs = out.find("Logs and admin:").unwrap();
    let t = out.find("--timeout-connect").unwrap();
    assert!(limits < t && t < logs, "{out}");
}

#[test]
fn version_says_commit_build_date_compiler_and_features() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    for needle in ["commit: ", "built: ", "rustc: rustc ", "features: "] {
        assert!(out.contains(needle), "--version lacks {needle:?}:\n{out}");
    }
    assert!(
        out.contains("demo"),
        "the default build has the demo feature:\n{out}"
    );
    let commit = out
        .lines()
        .find_map(|l| l.strip_prefix("commit: "))
        .unwrap_or_default();
    assert!(!commit.is_empty(), "{out}");
}

#[test]
fn a_bad_log_filter_is_a_flag_error_and_json_logs_parse() {
    for bad in ["infoo", "warn,debugg", ""] {
        let (code, _, err) = run(&["check-config", "--backend", "127.0.0.1:1", "--log", bad]);
        assert_eq!(code, Some(2), "--log {bad:?}: {err}");
        assert!(err.contains("--log"), "{err}");
    }
    let (code, _, err) = run(&[
        "check-config",
        "--backend",
        "127.0.0.1:1",
        "--log",
        "ringway=debug,warn",
        "--log-format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&[
        "check-config",
        "--backend",
        "127.0.0.1:1",
        "--log-format",
        "yaml",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--log-format") && err.contains("json"),
        "{err}"
    );

    let origin = origin();
    let backend = origin.addr().to_string();
    let proxy = Proxy::start(&["--backend", &backend, "--log-format", "json"]);
    let err = wait_for(Duration::from_secs(10), "the start-up log", || {
        let e = proxy.stderr();
        e.contains("started").then_some(e)
    });
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}

#[test]
fn a_low_fd_limit_is_warned_about_with_the_fix() {
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=512:512", BIN])
        .args(["--backend", "127.0.0.1:1", "--listen", "127.0.0.1:0"])
        .args(["--shards", "2", "--max-conns-per-shard", "1000"]);
    let err = stderr_until(cmd, "RLIMIT_NOFILE");
    assert!(
        err.contains("RLIMIT_NOFILE is 512")
            && err.contains("ulimit -n")
            && err.contains("LimitNOFILE"),
        "{err}"
    );
    // Enough descriptors: no warning.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=512:512", BIN])
        .args(["--backend", "127.0.0.1:1", "--listen", "127.0.0.1:0"])
        .args(["--shards", "1", "--max-conns-per-shard", "100"]);
    let err = stderr_until(cmd, "started");
    assert!(
        err.contains("started") && !err.contains("RLIMIT_NOFILE"),
        "{err}"
    );
}

#[test]
fn an_address_another_process_listens_on_is_refused_unless_shared_on_purpose() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let first = Proxy::start(&["--backend", &backend]);
    let addr = first.addr.to_string();
    let (code, _, err) = run(&["--backend", &backend, "--listen", &addr, "--shards", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("already listens on {addr}")) && err.contains("--reuse-port-shared"),
        "{err}"
    );
    // Said on purpose: both serve the address.
    let second = Proxy::start(&[
        "--backend",
        &backend,
        "--listen",
        &addr,
        "--reuse-port-shared",
    ]);
    assert_eq!(second.addr, first.addr);
    assert_eq!(second.connect().get("/").status, 200);
}

#[test]
fn a_closed_stdout_is_no_panic() {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Nobody will read: every write to stdout fails with EPIPE, as under `| head -1`.
    drop(read_end);
    let mut child = Command::new(BIN)
        .args(["check-config", "--backend", "127.0.0.1:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn demo_takes_only_its_own_flags() {
    let (code, _, err) = run(&["demo", "--backend", "127.0.0.1:1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--backend"), "{err}");
    let (code, out, _) = run(&["demo", "--help"]);
    assert_eq!(code, Some(0));
    for flag in ["--duration", "--connections", "--shards"] {
        assert!(out.contains(flag), "demo --help lacks {flag}:\n{out}");
    }
    assert!(
        !out.contains("--backend") && !out.contains("--timeout-connect"),
        "{out}"
    );
    // The proxy's subcommands still take the proxy's flags, before or after them.
    let (code, out, err) = run(&["check-config", "--backend", "127.0.0.1:9", "--shards", "2"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("2 unpinned shard"), "{out}");
    let (code, out, err) = run(&["--shards", "3", "check-config", "--backend", "127.0.0.1:9"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("3 unpinned shard"), "{out}");
}

#[test]
fn man_page_and_completions_come_from_the_flag_definitions() {
    let (code, man, err) = run(&["generate", "man"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        man.starts_with(".ie") || man.contains(".TH ringway"),
        "{man}"
    );
    for flag in ["timeout\\-connect", "access\\-log", "check\\-config"] {
        assert!(man.contains(flag), "the man page lacks {flag}");
    }
    let (code, bash, _) = run(&["generate", "bash"]);
    assert_eq!(code, Some(0));
    assert!(
        bash.contains("--pool-max-idle") && bash.contains("complete"),
        "{bash}"
    );
    let (code, _, err) = run(&["generate", "tcsh"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn sighup_no_longer_kills_the_proxy() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    proxy.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "SIGHUP to be logged", || {
        proxy.stderr().contains("SIGHUP")
    });
    proxy.assert_healthy();
    assert_eq!(proxy.connect().get("/").status, 200);
}
