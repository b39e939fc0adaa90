//! Servers given by DNS name, through the real binary and a real DNS server on loopback
//! (`dns_server.py`, on dnslib, installed by .ci/run) whose answers the test changes:
//! the backend follows them under load without a client error, keeps the connections to
//! addresses that stay, drains the ones that go, and keeps its last addresses when the
//! name stops resolving.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const NAME: &str = "api.ringway.test";

/// The test DNS server: answers from a JSON file the test rewrites.
struct Dns {
    child: Child,
    port: u16,
    answers: TempFile,
}

impl Dns {
    fn start() -> Dns {
        let answers = TempFile(temp_path("dns-answers.json"));
        std::fs::write(&answers.0, "{}").unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dns_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&answers.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is needed for this test");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = match line.trim().strip_prefix("port ") {
            Some(p) => p.parse().unwrap(),
            None => {
                let _ = child.kill();
                panic!(
                    "the test DNS server did not start (it needs python3 with dnslib, which .ci/run installs): {line:?}"
                );
            }
        };
        Dns {
            child,
            port,
            answers,
        }
    }

    /// Where `set` writes before its rename: one per answers file.
    fn scratch(answers: &std::path::Path) -> std::path::PathBuf {
        answers.with_extension("tmp")
    }

    fn set(&self, json: &str) {
        // Whole-file replace: the server never reads half a file.
        let tmp = Dns::scratch(&self.answers.0);
        std::fs::write(&tmp, json).unwrap();
        std::fs::rename(&tmp, &self.answers.0).unwrap();
    }

    fn answer_a(&self, ips: &[&str]) {
        let list: Vec<String> = ips.iter().map(|i| format!("\"{i}\"")).collect();
        self.set(&format!(
            "{{\"{NAME}.\": {{\"a\": [{}], \"ttl\": 1}}}}",
            list.join(", ")
        ));
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The server's query counter, beside the answers file (which `TempFile` removes).
        let _ = std::fs::remove_file(self.answers.0.with_extension("json.count"));
    }
}

/// The tests of this file run in parallel, each with its own DNS server: two answers files
/// must never share the scratch file their rewrites go through (they once did, and one
/// test's answers landed in another's file: "201 / 0" and a failed rename in CI).
#[test]
fn answers_files_never_share_a_scratch_file() {
    let a = temp_path("dns-answers.json");
    let b = temp_path("dns-answers.json");
    assert_ne!(Dns::scratch(&a), Dns::scratch(&b));
    assert_ne!(Dns::scratch(&a), a);
}

fn ok_of(loads: &[Load]) -> u64 {
    loads.iter().map(|l| l.ok()).sum()
}

/// Waits until the loads answered `n` more requests.
fn more(loads: &[Load], n: u64, what: &str) {
    let start = ok_of(loads);
    wait_until(Duration::from_secs(20), what, || ok_of(loads) >= start + n);
}

/// Two origins on the same port of 127.0.0.2 and 127.0.0.3 (loopback is a /8).
fn origins() -> (Origin, Origin, u16) {
    for _ in 0..20 {
        let a = origin_with(OriginConfig {
            listen: "127.0.0.2:0".parse().unwrap(),
            ..OriginConfig::default()
        });
        let port = a.addr().port();
        if let Ok(b) = Origin::start(OriginConfig {
            listen: SocketAddr::from(([127, 0, 0, 3], port)),
            ..OriginConfig::default()
        }) {
            return (a, b, port);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

fn dns_metric(p: &Proxy, family: &str) -> u64 {
    metric(
        &p.metrics(),
        &format!(
            "ringway_{family}{{backend=\"api\",name=\"{NAME}:{}\"}}",
            port_of(p)
        ),
    )
}

/// The origins' port, from the proxy's metrics labels (the test knows it too; this keeps
/// `dns_metric` short).
fn port_of(p: &Proxy) -> u16 {
    let text = p.metrics();
    let needle = format!("name=\"{NAME}:");
    let i = text.find(&needle).expect("a DNS name in /metrics") + needle.len();
    text[i..].split('"').next().unwrap().parse().unwrap()
}

/// Connections an origin saw close (accepted minus open now).
fn closed(o: &Origin) -> u64 {
    let s = o.stats();
    s.connections_total - s.connections_open
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// The issue's scenario, under continuous load from two clients on a two-shard proxy:
/// A = .2 (only origin 2 serves), then .2 + .3 (both serve, origin 2 keeps its
/// connections), then .3 alone (origin 2 gets no new request and its pooled connections
/// close; origin 3 keeps the connections it had), then NXDOMAIN and SERVFAIL (the last
/// set stays, each state logged once, counted), then it resolves again. No client error.
#[test]
fn servers_follow_the_dns_answers_under_load() {
    let dns = Dns::start();
    dns.answer_a(&["127.0.0.2"]);
    let (o2, o3, port) = origins();
    let f = TempFile(temp_path("dns.toml"));
    std::fs::write(
        &f.0,
        format!(
            "resolvers = [\"{}\"]\nresolve-ttl-min = \"100ms\"\nresolve-ttl-max = \"5s\"\n\
             [backends.api]\nservers = [\"{NAME}:{port}\"]\n",
            dns.addr()
        ),
    )
    .unwrap();
    let p = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "2"]);
    let loads = [Load::start(p.addr, "/x"), Load::start(p.addr, "/x")];

    // 1. One address.
    more(&loads, 100, "load on 127.0.0.2");
    assert_eq!(
        o3.stats().requests_total,
        0,
        "127.0.0.3 is not in the answer yet"
    );
    assert!(o2.stats().requests_total >= 100);
    assert_eq!(dns_metric(&p, "dns_addresses"), 1);
    let o2_closed = closed(&o2);

    // 2. Two addresses: both get traffic; origin 2's connections stay.
    dns.answer_a(&["127.0.0.2", "127.0.0.3"]);
    wait_until(Duration::from_secs(10), "127.0.0.3 to serve", || {
        o3.stats().requests_total > 50
    });
    let o2_before = o2.stats().requests_total;
    more(&loads, 100, "load on both");
    assert!(
        o2.stats().requests_total > o2_before + 20,
        "127.0.0.2 still serves"
    );
    assert_eq!(
        closed(&o2),
        o2_closed,
        "adding an address closed none of the connections to the one that stays"
    );
    assert_eq!(dns_metric(&p, "dns_addresses"), 2);
    let log = p.stderr();
    assert!(
        log.contains(&format!(
            "now resolves to [127.0.0.2:{port}, 127.0.0.3:{port}] (was [127.0.0.2:{port}])"
        )),
        "{log}"
    );

    // 3. Only .3: origin 2 gets nothing new, its pooled connections close; origin 3's stay.
    let o3_closed = closed(&o3);
    let o3_open = o3.stats().connections_open;
    assert!(o3_open >= 1);
    dns.answer_a(&["127.0.0.3"]);
    wait_until(
        Duration::from_secs(10),
        "127.0.0.2's pooled connections to close",
        || dns_metric(&p, "dns_addresses") == 1 && o2.stats().connections_open == 0,
    );
    let o2_after = o2.stats().requests_total;
    more(&loads, 200, "load on 127.0.0.3 alone");
    assert_eq!(
        o2.stats().requests_total,
        o2_after,
        "the removed address gets no new request"
    );
    assert_eq!(
        closed(&o3),
        o3_closed,
        "removing an address closed none of the connections to the one that stays"
    );
    assert!(o3.stats().connections_open >= o3_open);

    // 4. The name stops resolving: the last set stays, logged once per state, counted.
    let failures = dns_metric(&p, "dns_failures_total");
    dns.set(&format!("{{\"{NAME}.\": {{\"rcode\": \"NXDOMAIN\"}}}}"));
    wait_until(Duration::from_secs(10), "NXDOMAIN answers", || {
        dns_metric(&p, "dns_failures_total") >= failures + 3
    });
    assert_eq!(dns_metric(&p, "dns_failing"), 1);
    let o3_before = o3.stats().requests_total;
    // Each load connection may have had one request counted by the origin before
    // `o3_before` whose answer the load counts only after it: ask for that many more.
    more(
        &loads,
        100 + loads.len() as u64,
        "load while the name does not resolve",
    );
    assert!(
        o3.stats().requests_total >= o3_before + 100,
        "the last address still serves"
    );
    let log = p.stderr();
    assert_eq!(
        count(
            &log,
            "does not resolve (NXDOMAIN); keeping its last addresses"
        ),
        1,
        "logged once however many failures: {log}"
    );
    let failures = dns_metric(&p, "dns_failures_total");
    dns.set(&format!("{{\"{NAME}.\": {{\"rcode\": \"SERVFAIL\"}}}}"));
    wait_until(Duration::from_secs(15), "SERVFAIL answers", || {
        dns_metric(&p, "dns_failures_total") >= failures + 2
            && count(&p.stderr(), "keeping its last addresses") >= 2
    });
    // An answer with no address is a failure too; the set stays.
    dns.set(&format!("{{\"{NAME}.\": {{\"a\": [], \"ttl\": 1}}}}"));
    wait_until(Duration::from_secs(15), "empty answers", || {
        count(&p.stderr(), "keeping its last addresses") >= 3
    });
    assert_eq!(dns_metric(&p, "dns_addresses"), 1);
    more(&loads, 50, "load on the last address");

    // 5. It resolves again.
    dns.answer_a(&["127.0.0.3"]);
    wait_until(Duration::from_secs(10), "the name to resolve again", || {
        p.stderr().contains("resolves again")
    });
    assert_eq!(dns_metric(&p, "dns_failing"), 0);
    assert!(dns_metric(&p, "dns_resolutions_total") > dns_metric(&p, "dns_failures_total"));
    let mut failed_total = 0;
    let mut why_all = Vec::new();
    for l in loads {
        let (_, failed, why) = l.finish();
        failed_total += failed;
        why_all.extend(why);
    }
    assert_eq!(failed_total, 0, "client errors: {why_all:?}");
    // /metrics stays valid Prometheus text with the DNS families in it.
    let text = p.metrics();
    assert!(
        text.contains("# TYPE ringway_dns_resolutions_total counter"),
        "{text}"
    );
}

/// Health checks and balancing see each address as a server: a name with two addresses
/// gets round-robin over both, and the active check takes a stopped one out.
#[test]
fn each_address_is_a_server_for_checks_and_balancing() {
    let dns = Dns::start();
    dns.answer_a(&["127.0.0.2", "127.0.0.3"]);
    let (o2, o3, port) = origins();
    let f = TempFile(temp_path("dns-checks.toml"));
    std::fs::write(
        &f.0,
        format!(
            "resolvers = [\"{}\"]\n[backends.api]\nservers = [\"{NAME}:{port}\"]\nretries = 1\n\
             [backends.api.check]\npath = \"/\"\ninterval = \"100ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n",
            dns.addr()
        ),
    )
    .unwrap();
    let p = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "1"]);
    let mut c = p.connect();
    for _ in 0..200 {
        assert_eq!(c.get("/x").status, 200);
    }
    let (a, b) = (o2.stats().requests_total, o3.stats().requests_total);
    // Round-robin over the two addresses (checks add a few requests of their own).
    assert!(a >= 100 && b >= 100 && a.abs_diff(b) < 40, "{a} / {b}");
    wait_until(Duration::from_secs(5), "checks of both addresses", || {
        let m = p.metrics();
        try_metric(
            &m,
            &format!("ringway_server_check_up{{backend=\"api\",server=\"127.0.0.2:{port}\"}}"),
        ) == Some(1)
            && try_metric(
                &m,
                &format!("ringway_server_check_up{{backend=\"api\",server=\"127.0.0.3:{port}\"}}"),
            ) == Some(1)
    });
    o2.stop();
    wait_until(Duration::from_secs(5), "the stopped address down", || {
        try_metric(
            &p.metrics(),
            &format!("ringway_server_check_up{{backend=\"api\",server=\"127.0.0.2:{port}\"}}"),
        ) == Some(0)
    });
    let before = o3.stats().requests_total;
    for _ in 0..50 {
        assert_eq!(c.get("/x").status, 200);
    }
    assert!(o3.stats().requests_total >= before + 50);
}

fn check_config(toml: &str) -> (Option<i32>, String) {
    let f = TempFile(temp_path("dns-bad.toml"));
    std::fs::write(&f.0, toml).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config", f.0.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Bad names, resolvers, intervals and TTL bounds name the backend and the key and exit 2,
/// as does a name that does not resolve at start-up; a reload that adds one is refused.
#[test]
fn bad_dns_settings_exit_2_and_are_refused_on_reload() {
    let dns = Dns::start();
    dns.answer_a(&["127.0.0.2"]);
    let r = format!("resolvers = [\"{}\"]\n", dns.addr());
    for (toml, needle) in [
        (
            "[backends.api]\nservers = [\"bad_host!:80\"]\n".to_string(),
            "backends.api.servers: 'bad_host!:80': 'bad_host!' is not a valid host name",
        ),
        (
            "[backends.api]\nservers = [\"api.internal:80\"]\nresolvers = [\"dns.internal\"]\n".to_string(),
            "backends.api.resolvers: 'dns.internal' is not a DNS server address",
        ),
        (
            "resolvers = [\"127.0.0.1:99999\"]\n[backends.api]\nservers = [\"127.0.0.1:80\"]\n".to_string(),
            "resolvers: '127.0.0.1:99999' is not a DNS server address",
        ),
        (
            "[backends.api]\nservers = [\"api.internal:80\"]\nresolve-ttl-min = \"0s\"\n".to_string(),
            "backends.api.resolve-ttl-min: 0ns is out of range",
        ),
        (
            "[backends.api]\nservers = [\"api.internal:80\"]\nresolve-ttl-min = \"10s\"\nresolve-ttl-max = \"2s\"\n".to_string(),
            "backends.api.resolve-ttl-max: 2s is below resolve-ttl-min (10s) (backend 'api'",
        ),
        (
            "[backends.api]\nservers = [\"api.internal:80\"]\nresolve-interval = \"soon\"\n".to_string(),
            "backends.api.resolve-interval",
        ),
        (
            "resolve-timeout = \"0s\"\n[backends.api]\nservers = [\"127.0.0.1:80\"]\n".to_string(),
            "resolve-timeout: 0ns is out of range",
        ),
        (
            format!("{r}[backends.api]\nservers = [\"nope.ringway.test:80\"]\n"),
            "backends.api.servers: server 'nope.ringway.test:80' of backend 'api' does not resolve (NXDOMAIN)",
        ),
    ] {
        let (code, err) = check_config(&toml);
        assert_eq!(code, Some(2), "{toml}: {err}");
        assert!(err.contains(needle), "{toml}\n -> {err}\nlacks {needle}");
    }
    // The same file starts: exit 2 with the same message.
    let f = TempFile(temp_path("dns-start.toml"));
    std::fs::write(
        &f.0,
        format!("{r}[backends.api]\nservers = [\"nope.ringway.test:80\"]\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", f.0.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.ringway.test:80"));

    // A reload that adds a name that does not resolve, or a bad resolver, is refused; the
    // running configuration (a name that does resolve) keeps serving.
    let o = origin_with(OriginConfig {
        listen: "127.0.0.2:0".parse().unwrap(),
        ..OriginConfig::default()
    });
    let port = o.addr().port();
    let good = format!("{r}[backends.api]\nservers = [\"{NAME}:{port}\"]\n");
    std::fs::write(&f.0, &good).unwrap();
    let p = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "1"]);
    let mut c = p.connect();
    assert_eq!(c.get("/x").status, 200);
    std::fs::write(
        &f.0,
        format!("{r}[backends.api]\nservers = [\"{NAME}:{port}\", \"nope.ringway.test:80\"]\n"),
    )
    .unwrap();
    p.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the refused reload", || {
        metric(&p.metrics(), "ringway_config_reload_failures_total") == 1
    });
    std::fs::write(&f.0, format!("{good}resolve-ttl-max = \"1ms\"\n")).unwrap();
    p.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the second refused reload", || {
        metric(&p.metrics(), "ringway_config_reload_failures_total") == 2
    });
    // The counter moves before the log line reaches the test's reader of stderr (a
    // thread): wait for the lines, do not read once (CI saw the second one missing).
    wait_until(Duration::from_secs(5), "both refusals in the log", || {
        let log = p.stderr();
        log.contains("'nope.ringway.test:80' of backend 'api' does not resolve")
            && log.contains("backends.api.resolve-ttl-max")
    });
    assert_eq!(metric(&p.metrics(), "ringway_config_reloads_total"), 0);
    assert_eq!(c.get("/x").status, 200);
}

/// Names in /etc/hosts (here `localhost`) resolve with the system's configuration, no DNS
/// server needed.
#[test]
fn localhost_resolves_from_the_hosts_file() {
    let o = origin();
    let port = o.addr().port();
    let out = Command::new(BIN)
        .args(["check-config", "--backend", &format!("localhost:{port}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        text.contains(&format!("name localhost:{port} resolves to")),
        "{text}"
    );
    let p = Proxy::start(&[
        "--backend",
        &format!("localhost:{port}"),
        "--resolve-family",
        "ipv4",
        "--shards",
        "1",
    ]);
    let mut c = p.connect();
    assert_eq!(c.get("/x").status, 200);
    assert!(o.stats().requests_total >= 1);
}

/// docs/traffic.md's DNS example is valid: its names resolved by the test DNS server
/// (its `resolvers` lines pointed at it), `check-config` accepts it and shows each name's
/// addresses and schedule.
#[test]
fn the_traffic_guide_dns_example_is_valid() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/traffic.md"))
        .unwrap();
    let section = &doc[doc.find("## Servers by DNS name").expect("the DNS section")..];
    let start = section.find("```toml\n").expect("a TOML example") + 8;
    let end = start + section[start..].find("```").unwrap();
    let dns = Dns::start();
    dns.set(
        "{\"api.internal.\": {\"a\": [\"10.0.0.5\", \"10.0.0.6\"], \"ttl\": 30}, \
          \"search.internal.\": {\"a\": [\"10.0.0.9\"], \"aaaa\": [\"fd00::9\"], \"ttl\": 30}}",
    );
    let toml: String = section[start..end]
        .lines()
        .map(|l| {
            if l.starts_with("resolvers = ") {
                format!("resolvers = [\"{}\"]", dns.addr())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let f = TempFile(temp_path("guide-dns.toml"));
    std::fs::write(&f.0, toml).unwrap();
    let out = Command::new(BIN)
        .args([
            "check-config",
            "--config",
            f.0.to_str().unwrap(),
            "--shards",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("backend api: 10.0.0.5:9000, 10.0.0.6:9000, 10.0.0.7:9000 weight=2"),
        "{text}"
    );
    assert!(
        text.contains("name api.internal:9000 resolves to [10.0.0.5, 10.0.0.6]"),
        "{text}"
    );
    // ipv4 only: the AAAA record is not used.
    assert!(
        text.contains("backend search: https://search.internal (10.0.0.9:443) weight=3\n"),
        "{text}"
    );
    assert!(text.contains("re-resolved every 5s"), "{text}");
}
