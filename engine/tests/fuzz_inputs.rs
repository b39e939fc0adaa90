//! Property tests on the inputs ringway takes from outside besides HTTP/1.1 (whose codec
//! is fuzzed in `http1/tests/fuzz.rs`): the TOML configuration file, through the real
//! `Cli` → `Config` path that `ringway check-config` and a reload use, and the HTTP/2
//! front, driven over real sockets with random frame sequences after a valid preface.
//! What must hold: no panic and no hang; a bad file is an error that says something; a
//! bad frame sequence ends that connection at worst, and another client is still served.
//!
//! `PROPTEST_CASES` sets the case count (CI runs more; see docs/fuzzing.md).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clap::Parser;
use common::*;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// The configuration file

const KEYS: &[&str] = &[
    "listen",
    "listen-tls",
    "cert",
    "key",
    "accept-proxy",
    "backend",
    "route",
    "default-backend",
    "backend-ca",
    "cpus",
    "shards",
    "reuse",
    "pool-max-idle",
    "pool-purge-delay",
    "max-reuse",
    "pool-low-idle",
    "takeover",
    "takeover-timeout",
    "timeout-client-head",
    "timeout-client-idle",
    "timeout-client-body",
    "timeout-connect",
    "timeout-backend",
    "grace",
    "max-head",
    "max-conns-per-shard",
    "admin",
    "log",
    "log-format",
    "access-log",
    "access-log-format",
    "fault",
    "fault-seed",
    "backends",
    "nonsense-key",
];

/// A TOML value of some type, valid or not for whichever key gets it.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..100_000).prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z0-9:./=,%*-]{0,24}".prop_map(|s| format!("{s:?}")),
        prop_oneof![
            Just("\"127.0.0.1:0\""),
            Just("\"10s\""),
            Just("\"0ms\""),
            Just("\"-1s\""),
            Just("\"64KiB\""),
            Just("\"99999999999999999999\""),
            Just("\"always\""),
            Just("\"h2c://127.0.0.1:1\""),
            Just("\"api=127.0.0.1:1,127.0.0.1:2\""),
            Just("\"0-1\""),
            Just("\"on\""),
            Just("\"json\""),
            Just("\"reserve=200%\""),
            Just("1.5"),
            Just("\"\""),
        ]
        .prop_map(str::to_string),
        prop::collection::vec("[a-z0-9:.]{0,12}", 0..4).prop_map(|v| format!(
            "[{}]",
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    ]
}

/// A document: key = value lines, sometimes a table, sometimes broken bytes.
fn document() -> impl Strategy<Value = Vec<u8>> {
    let line = (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}\n"));
    let table = (
        "[a-z]{1,6}",
        prop::collection::vec((prop::sample::select(KEYS), value()), 0..4),
    )
        .prop_map(|(name, kv)| {
            let mut s = format!("[backends.{name}]\n");
            for (k, v) in kv {
                s.push_str(&format!("{k} = {v}\n"));
            }
            s
        });
    let doc = prop::collection::vec(prop_oneof![4 => line, 1 => table], 0..8)
        .prop_map(|parts| parts.concat().into_bytes());
    (
        doc,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(mut d, edits)| {
            for (i, b) in edits {
                if !d.is_empty() {
                    let at = i.index(d.len());
                    d[at] = b;
                }
            }
            d
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        .. ProptestConfig::default()
    })]

    /// Any file: `Config::from_opts` returns (no panic), and an error says something.
    #[test]
    fn config_files_never_panic_and_errors_say_what(doc in document()) {
        let path = temp_path("fuzz-config");
        std::fs::write(&path, &doc).unwrap();
        let p = path.to_string_lossy().to_string();
        let cli = ringway::config::Cli::try_parse_from(["ringway", "check-config", "--config", &p]);
        if let Ok(cli) = cli {
            let got = std::panic::catch_unwind(|| {
                ringway::config::Config::from_opts(&cli.opts()).map(|_| ()).map_err(|e| e.to_string())
            });
            let got = got.map_err(|_| "panicked").expect("from_opts must not panic");
            if let Err(msg) = got {
                prop_assert!(!msg.trim().is_empty());
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}

// ---------------------------------------------------------------------------------------
// The HTTP/2 front

/// One HTTP/2 frame: type, flags, stream id, payload.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![0u8..=9, any::<u8>()],
        any::<u8>(),
        prop_oneof![Just(0u32), Just(1), Just(3), 0u32..64, any::<u32>()],
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..24),
            // A plausible HEADERS block: an indexed `:method GET`, `:path /`, `:scheme http`.
            Just(vec![0x82, 0x84, 0x86, 0x41, 0x01, b'x']),
            // SETTINGS pairs, WINDOW_UPDATE increments, RST/GOAWAY codes.
            prop::collection::vec(any::<u8>(), 4..=6),
        ],
        prop_oneof![
            Just(None),
            Just(Some(0u32)),
            (0u32..40).prop_map(Some),
            Just(Some(1 << 24))
        ],
    )
        .prop_map(|(ty, flags, stream, payload, claimed)| {
            let len = claimed.unwrap_or(payload.len() as u32);
            let mut f = Vec::with_capacity(9 + payload.len());
            f.extend_from_slice(&len.to_be_bytes()[1..]);
            f.push(ty);
            f.push(flags);
            f.extend_from_slice(&stream.to_be_bytes());
            f.extend_from_slice(&payload);
            f
        })
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Random frames after the preface, against one proxy for all cases (starting one per
/// case would dominate the run time): the proxy stays up and serves a well-behaved client
/// after each sequence.
#[test]
fn h2_frame_sequences_never_break_the_shard() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--access-log", "off"]);
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .map_or(64, |n| (n / 50).max(32));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    let addr = proxy.addr;
    let result = runner.run(&prop::collection::vec(frame(), 1..12), |frames| {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(PREFACE);
        // An empty SETTINGS first, as a client must, then the random frames.
        let _ = s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        for f in &frames {
            if s.write_all(f).is_err() {
                break;
            }
        }
        // Read what the proxy says until it closes or goes quiet: the frames were seen.
        let mut sink = [0u8; 4096];
        while let Ok(n) = s.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        drop(s);
        let mut c = Conn::connect(addr);
        prop_assert_eq!(c.get("/").status, 200);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    proxy.assert_healthy();
}
