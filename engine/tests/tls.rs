//! TLS end to end, with real peers: `curl` and `openssl s_client` as clients of ringway's
//! TLS listeners (versions, ALPN, SNI choosing the certificate, resumption, SIGHUP
//! reload, bad input), and nginx with `listen ... ssl` as a TLS origin that is not ours
//! (verification, pooling, takeover of live TLS sessions between shards, a soak under
//! the takeover faults). Certificates are made here, with rcgen: a CA and leaves signed by
//! it. nginx, curl and openssl are installed by `.ci/run`; a test fails if one is missing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

// ---------------------------------------------------------------------------------------
// Certificates

/// A test CA, and leaves it signs, written as PEM files in a temporary directory.
struct Pki {
    dir: TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// One leaf: its files and its DER (to compare with what a client was shown).
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "ringway test CA");
        let ca = p.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A leaf for `names` (DNS names or IP addresses) with common name `cn`.
    fn leaf(&self, file: &str, cn: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf {
            cert: cert_path,
            key: key_path,
            der: cert.der().to_vec(),
        }
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------
// Clients

fn run(cmd: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd} is needed for this test (installed by .ci/run): {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd} {args:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `curl` over TLS to `name:port` (resolved to 127.0.0.1), verifying with `ca`; returns
/// (`%{http_version} %{http_code}`, body).
fn curl_tls(ca: &Path, name: &str, port: u16, path: &str, extra: &[&str]) -> (String, String) {
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}{path}");
    let ca = s(ca);
    let mut args = vec![
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_version} %{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = run("curl", &args, b"");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.to_string(), body.to_string())
}

/// `openssl s_client` to 127.0.0.1:port with `args`, sending one `Connection: close`
/// request and reading until the server closes (so TLS 1.3 tickets, which come after the
/// handshake, are read before it exits); returns its stdout and stderr.
fn s_client(port: u16, args: &[&str]) -> String {
    let connect = format!("127.0.0.1:{port}");
    let mut all = vec!["s_client", "-connect", &connect, "-ign_eof"];
    all.extend_from_slice(args);
    let out = run(
        "openssl",
        &all,
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A keep-alive TLS client written with rustls, to hold one connection across a reload.
struct TlsConn {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsConn {
    fn connect(addr: SocketAddr, ca: &Path, name: &str) -> TlsConn {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).unwrap();
        for c in rustls_pemfile_certs(&pem) {
            roots.add(c).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(cfg),
            rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        TlsConn {
            tls: rustls::StreamOwned::new(conn, sock),
        }
    }

    /// One GET; returns (status, body). The response must carry a Content-Length.
    fn get(&mut self, path: &str) -> (u16, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        self.tls.write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.tls.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("content-length");
        let mut body = vec![0u8; len];
        self.tls.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).to_string())
    }

    /// The leaf certificate the server showed.
    fn peer_leaf(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().unwrap()[0].to_vec()
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

/// Sum of a counter over every shard's series (whatever the totals look like).
fn total(m: &str, name: &str) -> u64 {
    m.lines()
        .filter(|l| !l.starts_with('#') && !l.contains("shard=\"all\""))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let n = series.split('{').next()?;
            (n == name).then(|| v.parse::<f64>().ok())?
        })
        .sum::<f64>() as u64
}

// ---------------------------------------------------------------------------------------
// Termination

/// A large body to a TLS client is copied (rustls must see its bytes), never spliced
/// (`--splice-min`): byte-exact through curl over TLS 1.3, and `/metrics` counts no
/// spliced body, while the same body to a plain client on the same proxy is spliced.
#[test]
fn a_large_body_to_a_tls_client_is_copied_not_spliced() {
    let pki = Pki::new("tls-splice");
    let a = pki.leaf("a", "a.test", &["a.test"]);
    let o = origin();
    let backend = o.addr().to_string();
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--splice-min",
        "64KiB",
        "--listen-tls",
        "127.0.0.1:0",
        "--cert",
        &s(&a.cert),
        "--key",
        &s(&a.key),
    ]);
    let port = proxy.tls_listeners[0].port();
    let ca = s(&pki.ca_file());
    let out_file = temp_path("tls-splice-body");
    let _f = TempFile(out_file.clone());
    let resolve = format!("a.test:{port}:127.0.0.1");
    let url = format!("https://a.test:{port}/size/3000017");
    const N: usize = 3_000_017;
    let spliced = |proxy: &Proxy| sum_metric(&proxy.metrics(), "ringway_body_spliced_total", &[]);
    for _ in 0..2 {
        let out = run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                "--http1.1",
                "--tlsv1.3",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "-o",
                &s(&out_file),
                &url,
            ],
            b"",
        );
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read(&out_file).unwrap() == pattern(N),
            "the body over TLS differs"
        );
    }
    assert_eq!(spliced(&proxy), 0.0, "a body to a TLS client was spliced");
    assert_eq!(
        sum_metric(&proxy.metrics(), "ringway_body_ring_sent_bytes_total", &[]),
        0.0,
        "a body to a TLS client was sent from the ring, past rustls"
    );
    // The plain listener of the same proxy splices it (its connection's second body).
    let mut c = proxy.connect();
    for _ in 0..2 {
        assert!(c.get("/size/3000017").body == pattern(N));
    }
    assert!(
        spliced(&proxy) >= 1.0,
        "the plain client's body was not spliced"
    );
    proxy.assert_healthy();
}

#[test]
fn tls_termination_versions_alpn_sni_and_resumption() {
    let pki = Pki::new("tls-term");
    let a = pki.leaf("a", "a.test", &["a.test"]);
    let b = pki.leaf("b", "b.test", &["b.test", "*.b.test"]);
    let o = origin();
    let backend = o.addr().to_string();
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--listen-tls",
        "127.0.0.1:0",
        "--cert",
        &s(&a.cert),
        "--key",
        &s(&a.key),
        "--cert",
        &s(&b.cert),
        "--key",
        &s(&b.key),
    ]);
    let port = proxy.tls_listeners[0].port();
    let ca = pki.ca_file();

    // TLS 1.3 and 1.2, HTTP/1.1 and HTTP/2 (ALPN), on the same port.
    for (versions, proto, want) in [
        (&["--tlsv1.3"][..], "--http1.1", "1.1 200"),
        (&["--tlsv1.3"][..], "--http2", "2 200"),
        (
            &["--tlsv1.2", "--tls-max", "1.2"][..],
            "--http1.1",
            "1.1 200",
        ),
        (&["--tlsv1.2", "--tls-max", "1.2"][..], "--http2", "2 200"),
    ] {
        let mut extra = versions.to_vec();
        extra.push(proto);
        let (status, body) = curl_tls(&ca, "a.test", port, "/headers", &extra);
        assert_eq!(status, want, "{extra:?}");
        // The origin sees the request as forwarded: the client came over TLS.
        assert!(
            body.to_ascii_lowercase()
                .contains("x-forwarded-proto: https"),
            "{extra:?}: {body}"
        );
    }
    // SNI chooses the certificate: each name gets its own (curl verifies the name).
    let (status, _) = curl_tls(&ca, "x.b.test", port, "/", &["--http1.1"]);
    assert_eq!(status, "1.1 200");
    let shown_b = TlsConn::connect(proxy.tls_listeners[0], &ca, "b.test");
    let mut shown_b = shown_b;
    assert_eq!(shown_b.get("/").0, 200);
    assert_eq!(
        shown_b.peer_leaf(),
        b.der,
        "b.test did not get its certificate"
    );
    let mut shown_a = TlsConn::connect(proxy.tls_listeners[0], &ca, "a.test");
    assert_eq!(shown_a.get("/").0, 200);
    assert_eq!(
        shown_a.peer_leaf(),
        a.der,
        "a.test did not get its certificate"
    );
    // An unknown name gets the first (default) certificate.
    let unknown = s_client(port, &["-servername", "nowhere.test"]);
    assert!(
        unknown.contains("CN = a.test") || unknown.contains("CN=a.test"),
        "{unknown}"
    );

    // openssl: ALPN, and resumption reported as Reused (TLS 1.3 tickets, TLS 1.2 too).
    let sess = pki.dir.join("sess.pem");
    let first = s_client(
        port,
        &[
            "-servername",
            "a.test",
            "-alpn",
            "h2",
            "-CAfile",
            &s(&ca),
            "-sess_out",
            &s(&sess),
        ],
    );
    assert!(first.contains("ALPN protocol: h2"), "{first}");
    assert!(first.contains("Verify return code: 0"), "{first}");
    let again = s_client(port, &["-servername", "a.test", "-sess_in", &s(&sess)]);
    assert!(
        again.contains("Reused"),
        "TLS 1.3 session not resumed:\n{again}"
    );
    let sess12 = pki.dir.join("sess12.pem");
    let first12 = s_client(
        port,
        &["-servername", "a.test", "-tls1_2", "-sess_out", &s(&sess12)],
    );
    assert!(first12.contains("TLSv1.2"), "{first12}");
    let again12 = s_client(
        port,
        &["-servername", "a.test", "-tls1_2", "-sess_in", &s(&sess12)],
    );
    assert!(
        again12.contains("Reused"),
        "TLS 1.2 session not resumed:\n{again12}"
    );

    let m = proxy.metrics();
    assert!(total(&m, "ringway_tls_handshakes_total") >= 10, "{m}");
    assert!(total(&m, "ringway_tls_resumed_total") >= 2, "{m}");
    proxy.assert_healthy();
}

/// A proxy with one TLS listener whose certificate is for `a.test`, in front of a fresh
/// origin, with `extra` flags; the PKI and origin live as long as the caller keeps them.
fn tls_front(tag: &str, extra: &[&str]) -> (Pki, Origin, Proxy) {
    let pki = Pki::new(tag);
    let a = pki.leaf("a", "a.test", &["a.test"]);
    let o = origin();
    let backend = o.addr().to_string();
    let (cert, key) = (s(&a.cert), s(&a.key));
    let mut args = vec![
        "--backend",
        &backend,
        "--listen-tls",
        "127.0.0.1:0",
        "--cert",
        &cert,
        "--key",
        &key,
    ];
    args.extend_from_slice(extra);
    let proxy = Proxy::start(&args);
    (pki, o, proxy)
}

/// A `Connection: close` response ends the TLS session with close_notify, so OpenSSL
/// clients keep their session resumable. ringway used to drop the socket after such a
/// response: OpenSSL read "unexpected eof", marked the session not resumable, and every
/// later connection was a full handshake (`openssl s_time -reuse`, the benchmark's
/// tls-resume workload, resumed none: 568 CPU-µs per connection against HAProxy's 342).
#[test]
fn closing_responses_send_close_notify_so_openssl_sessions_resume() {
    let (_pki, _o, mut proxy) = tls_front("tls-close", &[]);
    let port = proxy.tls_listeners[0].port();
    for version in ["-tls1_2", "-tls1_3"] {
        let out = s_client(port, &["-servername", "a.test", version]);
        assert!(out.contains("HTTP/1.1 200"), "{version}: {out}");
        assert!(
            !out.contains("unexpected eof"),
            "{version}: the close came without close_notify:\n{out}"
        );
    }
    // s_time prints one character per connection: `*` a full handshake, `r` a resumed one.
    let connect = format!("127.0.0.1:{port}");
    let out = run(
        "openssl",
        &[
            "s_time", "-connect", &connect, "-reuse", "-tls1_2", "-time", "1", "-www", "/",
        ],
        b"",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let marks: String = text
        .lines()
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b == b'*' || b == b'r'))
        .collect();
    let full = marks.matches('*').count();
    let resumed = marks.matches('r').count();
    assert!(
        resumed >= 20 && full <= 1 + resumed / 100,
        "s_time -reuse: {full} full handshakes, {resumed} resumed:\n{text}"
    );
    let m = proxy.metrics();
    assert!(
        total(&m, "ringway_tls_resumed_total") >= resumed as u64,
        "{m}"
    );
    proxy.assert_healthy();
}

#[test]
fn tls_bad_input_closes_that_connection_and_is_counted() {
    let (pki, _o, mut proxy) = tls_front("tls-bad", &["--timeout-client-head", "1s"]);
    let addr = proxy.tls_listeners[0];
    let ca = pki.ca_file();
    // A client that stalls in the handshake holds nothing: closed at the head timeout.
    let mut stalled = Conn::connect(addr);
    // Plain HTTP on the TLS port: the connection is closed (after an alert), no HTTP answer.
    let mut plain = Conn::connect(addr);
    plain.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let answer = plain.unread_bytes(Duration::from_secs(2));
    assert_eq!(answer.first(), Some(&0x15), "not a TLS alert: {answer:?}");
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/"),
        "{answer:?}"
    );
    assert!(
        plain.closed_within(Duration::from_secs(5)),
        "plain HTTP left open"
    );
    // No common ALPN protocol: refused.
    let no_alpn = s_client(addr.port(), &["-servername", "a.test", "-alpn", "spdy/1"]);
    assert!(
        no_alpn.to_ascii_lowercase().contains("alert")
            || no_alpn.contains("no application protocol"),
        "{no_alpn}"
    );
    assert!(
        stalled.closed_within(Duration::from_secs(5)),
        "stalled handshake left open"
    );
    // Other clients are unaffected.
    let (status, body) = curl_tls(&ca, "a.test", addr.port(), "/", &["--http1.1"]);
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("1.1 200", "hello, world\n")
    );
    let m = wait_for(
        Duration::from_secs(5),
        "three failed handshakes counted",
        || {
            let m = proxy.metrics();
            (total(&m, "ringway_tls_handshake_errors_total") >= 3).then_some(m)
        },
    );
    assert!(total(&m, "ringway_tls_handshakes_total") >= 1);
    proxy.assert_healthy();
}

#[test]
fn sighup_reloads_certificates_and_a_broken_file_keeps_the_old_ones() {
    let pki = Pki::new("tls-reload");
    let first = pki.leaf("first", "first", &["a.test"]);
    let second = pki.leaf("second", "second", &["a.test"]);
    let served = (pki.dir.join("served.crt"), pki.dir.join("served.key"));
    std::fs::copy(&first.cert, &served.0).unwrap();
    std::fs::copy(&first.key, &served.1).unwrap();
    let o = origin();
    let backend = o.addr().to_string();
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--listen-tls",
        "127.0.0.1:0",
        "--cert",
        &s(&served.0),
        "--key",
        &s(&served.1),
    ]);
    let addr = proxy.tls_listeners[0];
    let ca = pki.ca_file();
    let mut before = TlsConn::connect(addr, &ca, "a.test");
    assert_eq!(before.get("/").0, 200);
    assert_eq!(before.peer_leaf(), first.der);

    // New files, SIGHUP: new connections get the new certificate; the open one goes on.
    std::fs::copy(&second.cert, &served.0).unwrap();
    std::fs::copy(&second.key, &served.1).unwrap();
    proxy.signal(libc::SIGHUP);
    wait_until(
        Duration::from_secs(5),
        "a new connection to see the new certificate",
        || {
            let mut c = TlsConn::connect(addr, &ca, "a.test");
            c.get("/").0 == 200 && c.peer_leaf() == second.der
        },
    );
    assert_eq!(before.get("/"), (200, "hello, world\n".to_string()));
    assert_eq!(
        before.peer_leaf(),
        first.der,
        "an open connection changed certificate"
    );

    // A broken file: the reload is refused, counted, and the running certificate stays.
    std::fs::write(&served.0, b"-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    proxy.signal(libc::SIGHUP);
    wait_until(
        Duration::from_secs(5),
        "the failed reload to be counted",
        || total(&proxy.metrics(), "ringway_tls_reload_failures_total") == 1,
    );
    let mut after = TlsConn::connect(addr, &ca, "a.test");
    assert_eq!(after.get("/").0, 200);
    assert_eq!(
        after.peer_leaf(),
        second.der,
        "a broken file replaced the certificate"
    );
    assert_eq!(total(&proxy.metrics(), "ringway_tls_reloads_total"), 1);
    assert!(proxy.is_alive(), "SIGHUP stopped the proxy");
    proxy.assert_healthy();
}

// ---------------------------------------------------------------------------------------
// TLS backends: nginx with `listen ... ssl`

/// nginx serving TLS on an ephemeral port: `/?t=TOKEN` answers `tok=TOKEN`, and
/// `/nginx_status` counts the connections it accepted.
struct Nginx {
    child: Child,
    port: u16,
    ca: PathBuf,
    /// Status queries made so far (each is a connection nginx accepts).
    queries: std::cell::Cell<u64>,
}

impl Nginx {
    fn start(pki: &Pki, leaf: &Leaf) -> Nginx {
        Nginx::start_with(pki, leaf, "ssl")
    }

    /// nginx with `listen ... LISTEN_OPTS` (`ssl`, or `ssl http2` for HTTP/2 by ALPN).
    fn start_with(pki: &Pki, leaf: &Leaf, listen_opts: &str) -> Nginx {
        let dir = pki
            .dir
            .join(format!("nginx-{}", listen_opts.replace(' ', "-")));
        std::fs::create_dir_all(&dir).unwrap();
        let port = closed_port();
        let d = s(&dir);
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             keepalive_requests 1000000;\n keepalive_timeout 300s;\n\
             server {{\n  listen 127.0.0.1:{port} {listen_opts};\n  ssl_certificate {};\n  ssl_certificate_key {};\n\
             location = /nginx_status {{ stub_status; }}\n\
             location / {{ default_type text/plain; return 200 \"tok=$arg_t\\n\"; }}\n }}\n}}\n",
            s(&leaf.cert),
            s(&leaf.key)
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .args([
                "-p",
                &d,
                "-c",
                &s(&conf_path),
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx is needed for this test (installed by .ci/run)");
        wait_until(Duration::from_secs(10), "nginx to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Nginx {
            child,
            port,
            ca: pki.ca_file(),
            queries: std::cell::Cell::new(0),
        }
    }

    /// Connections nginx accepted so far, not counting the status queries' own.
    fn accepts(&self) -> u64 {
        let (_, body) = curl_tls(&self.ca, "127.0.0.1", self.port, "/nginx_status", &[]);
        self.queries.set(self.queries.get() + 1);
        let line = body.lines().nth(2).expect("stub_status numbers");
        let accepts: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
        accepts - self.queries.get()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET with a token through a plain HTTP client connection; the body must be ours.
fn get_token(c: &mut Conn, token: u64) -> Result<u16, String> {
    c.send(format!("GET /?t={token} HTTP/1.1\r\nHost: origin\r\n\r\n").as_bytes());
    let r = c
        .try_read_response(false)
        .map_err(|e| format!("request {token} lost: {e}"))?;
    if r.status == 200 && r.text() != format!("tok={token}\n") {
        return Err(format!(
            "request {token} got another's answer: {:?}",
            r.text()
        ));
    }
    Ok(r.status)
}

#[test]
fn tls_backends_verify_pool_and_move_between_shards() {
    let pki = Pki::new("tls-backend");
    let leaf = pki.leaf("origin", "origin", &["127.0.0.1", "localhost"]);
    let nginx = Nginx::start(&pki, &leaf);
    let backend = format!("https://127.0.0.1:{}", nginx.port);
    let ca = s(&pki.ca_file());

    // Not verifiable (the system roots do not know the test CA): 502, nothing pooled.
    let untrusted = Proxy::start(&["--backend", &backend]);
    let mut c = untrusted.connect();
    assert_eq!(c.get("/").status, 502);
    drop(untrusted);

    // Verified with --backend-ca; two shards, each with its own listener.
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--backend-ca",
        &ca,
        "--shards",
        "2",
        "--listen",
        "127.0.0.1:0@0",
        "--listen",
        "127.0.0.1:0@1",
        "--reuse",
        "always",
    ]);
    let (l0, l1) = (proxy.listeners[0], proxy.listeners[1]);
    let start = nginx.accepts();
    let mut c0 = Conn::connect(l0);
    for t in 0..20 {
        assert_eq!(get_token(&mut c0, t), Ok(200));
    }
    drop(c0);
    assert_eq!(
        nginx.accepts() - start,
        1,
        "20 sequential requests, more than one TLS connection"
    );
    // The load moves to shard 1: it takes over shard 0's idle TLS session (no new
    // handshake at the origin).
    let mut c1 = Conn::connect(l1);
    for t in 100..120 {
        assert_eq!(get_token(&mut c1, t), Ok(200));
    }
    drop(c1);
    let m = proxy.metrics();
    assert!(
        total(&m, "ringway_takeover_granted_total") > 0,
        "no takeover:\n{m}"
    );
    assert_eq!(
        nginx.accepts() - start,
        1,
        "shard 1 made its own TLS connection"
    );
    proxy.assert_healthy();
}

#[test]
fn tls_backend_soak_under_takeover_faults_loses_and_mixes_up_nothing() {
    let secs: u64 = std::env::var("RINGWAY_TLS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let pki = Pki::new("tls-soak");
    let leaf = pki.leaf("origin", "origin", &["127.0.0.1"]);
    let nginx = Nginx::start(&pki, &leaf);
    let backend = format!("https://127.0.0.1:{}", nginx.port);
    let ca = s(&pki.ca_file());
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--backend-ca",
        &ca,
        "--shards",
        "2",
        "--listen",
        "127.0.0.1:0@0",
        "--listen",
        "127.0.0.1:0@1",
        "--reuse",
        "always",
        "--pool-purge-delay",
        "300ms",
        "--pool-max-idle",
        "3",
        "--takeover-timeout",
        "2ms",
        "--fault",
        "reserve=20%,grant-delay=20%,channel-full=20%,connect=5%,adopt=10%",
        "--fault-seed",
        "11",
    ]);
    let baseline = total(&proxy.metrics(), "ringway_open_fds");
    let listeners = proxy.listeners.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, ok, unavailable) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let handles: Vec<_> = (0..4u64)
        .map(|i| {
            let (stop, sent, ok, unavailable) =
                (stop.clone(), sent.clone(), ok.clone(), unavailable.clone());
            let listeners = listeners.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut token = i << 40;
                while !stop.load(Ordering::Relaxed) {
                    // Clients move between the shards every 200 ms.
                    let phase = (started.elapsed().as_millis() / 200) as usize;
                    let mut c = Conn::connect(listeners[phase % 2]);
                    for _ in 0..(3 + token % 7) {
                        token += 1;
                        sent.fetch_add(1, Ordering::Relaxed);
                        match get_token(&mut c, token)? {
                            200 => ok.fetch_add(1, Ordering::Relaxed),
                            503 => unavailable.fetch_add(1, Ordering::Relaxed),
                            other => return Err(format!("unexpected status {other}")),
                        };
                    }
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join()
            .expect("client thread")
            .expect("every request answered, with its own body");
    }
    let (sent, ok, unavailable) = (
        sent.load(Ordering::Relaxed),
        ok.load(Ordering::Relaxed),
        unavailable.load(Ordering::Relaxed),
    );
    assert_eq!(sent, ok + unavailable);
    assert!(ok > sent / 2, "too few proxied answers: {ok} of {sent}");
    let m = wait_for(Duration::from_secs(20), "fds back to the baseline", || {
        let m = proxy.metrics();
        (total(&m, "ringway_open_fds") <= baseline).then_some(m)
    });
    let asked = total(&m, "ringway_takeover_asked_total");
    let granted = total(&m, "ringway_takeover_granted_total");
    let resolved = granted
        + total(&m, "ringway_takeover_denied_total")
        + total(&m, "ringway_takeover_timeout_total")
        + total(&m, "ringway_takeover_failed_total")
        + total(&m, "ringway_takeover_pending");
    assert!(granted > 0, "no TLS connection was taken over:\n{m}");
    assert_eq!(resolved, asked, "takeover counters do not add up:\n{m}");
    eprintln!("tls soak: {sent} requests ({unavailable} x 503) in {secs}s; takeover asked {asked}, granted {granted}");
    proxy.assert_healthy();
}

// ---------------------------------------------------------------------------------------
// Configuration

/// Runs `ringway ARGS` to its exit; returns (status, stdout, stderr).
fn ringway(args: &[&str]) -> (Option<i32>, String, String) {
    let out = run(BIN, args, b"");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn tls_settings_in_flags_and_file_and_their_errors() {
    let pki = Pki::new("tls-config");
    let a = pki.leaf("a", "a.test", &["a.test"]);
    let missing = pki.dir.join("missing.crt");
    let garbage = pki.dir.join("garbage.key");
    std::fs::write(&garbage, "not a key\n").unwrap();
    const B: &str = "127.0.0.1:1";
    // A missing or unreadable certificate or key names the file and exits 2.
    for (args, want) in [
        (
            vec![
                "check-config",
                "--backend",
                B,
                "--listen-tls",
                "127.0.0.1:0",
                "--cert",
                &s(&missing),
                "--key",
                &s(&a.key),
            ],
            s(&missing),
        ),
        (
            vec![
                "check-config",
                "--backend",
                B,
                "--listen-tls",
                "127.0.0.1:0",
                "--cert",
                &s(&a.cert),
                "--key",
                &s(&garbage),
            ],
            s(&garbage),
        ),
        (
            vec![
                "check-config",
                "--backend",
                B,
                "--listen-tls",
                "127.0.0.1:0",
            ],
            "--cert".to_string(),
        ),
        (
            vec!["check-config", "--backend", B, "--cert", &s(&a.cert)],
            "--key".to_string(),
        ),
        (
            vec![
                "check-config",
                "--backend",
                "https://127.0.0.1:1",
                "--backend-ca",
                &s(&missing),
            ],
            s(&missing),
        ),
        (
            vec!["check-config", "--backend", "h3://127.0.0.1:1"],
            "--backend".to_string(),
        ),
    ] {
        let (code, _, err) = ringway(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?} should name {want}: {err}");
    }
    // The same settings in the TOML file.
    let file = pki.dir.join("ringway.toml");
    std::fs::write(
        &file,
        format!(
            "backend = [\"https://127.0.0.1:9443\"]\nbackend-ca = \"{}\"\nlisten-tls = [\"127.0.0.1:0\"]\ncert = [\"{}\"]\nkey = [\"{}\"]\n",
            s(&pki.ca_file()),
            s(&a.cert),
            s(&a.key)
        ),
    )
    .unwrap();
    let (code, out, err) = ringway(&["check-config", "--config", &s(&file)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("listen (TLS): 127.0.0.1:0"), "{out}");
    assert!(out.contains("https://127.0.0.1"), "{out}");
}

/// `h2://` backends: HTTP/2 over TLS, chosen by ALPN, against nginx `listen ... ssl http2`:
/// requests from HTTP/1.1 and HTTP/2 clients are multiplexed on a few TLS connections.
#[test]
fn h2_backends_over_tls_multiplex_by_alpn() {
    let pki = Pki::new("tls-h2-backend");
    let leaf = pki.leaf("origin", "origin", &["127.0.0.1"]);
    let nginx = Nginx::start_with(&pki, &leaf, "ssl http2");
    let backend = format!("h2://127.0.0.1:{}", nginx.port);
    let ca = s(&pki.ca_file());
    let mut proxy = Proxy::start(&["--backend", &backend, "--backend-ca", &ca]);
    let start = nginx.accepts();
    let mut c = proxy.connect();
    for t in 0..20 {
        assert_eq!(get_token(&mut c, t), Ok(200));
    }
    // Many concurrent client streams share a handful of backend TLS connections.
    let url = format!("http://{}/?t=7", proxy.addr);
    let out = run("h2load", &["-c", "10", "-m", "10", "-n", "2000", &url], b"");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("2000 succeeded, 0 failed"), "{text}");
    let conns = nginx.accepts() - start;
    assert!(
        (1..=10).contains(&conns),
        "{conns} TLS connections at the origin for 2000 requests"
    );
    // A server that does not agree to h2 by ALPN is a failed connect: 502.
    let h1_only = Nginx::start(&pki, &leaf);
    let wrong = format!("h2://127.0.0.1:{}", h1_only.port);
    let no_h2 = Proxy::start(&["--backend", &wrong, "--backend-ca", &ca]);
    assert_eq!(no_h2.connect().get("/").status, 502);
    proxy.assert_healthy();
}

/// An idle `h2://` connection (HTTP/2 over TLS) moves between shards with both its
/// rustls session and its `h2` state: shard 1 serves on it without a new TLS handshake or
/// a new HTTP/2 connection at nginx, and then shard 0 takes it back.
#[test]
fn idle_h2_over_tls_connections_move_between_shards() {
    let pki = Pki::new("tls-h2-move");
    let leaf = pki.leaf("origin", "origin", &["127.0.0.1"]);
    let nginx = Nginx::start_with(&pki, &leaf, "ssl http2");
    let backend = format!("h2://127.0.0.1:{}", nginx.port);
    let ca = s(&pki.ca_file());
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--backend-ca",
        &ca,
        "--shards",
        "2",
        "--listen",
        "127.0.0.1:0@0",
        "--listen",
        "127.0.0.1:0@1",
        "--reuse",
        "always",
        "--pool-purge-delay",
        "60s",
    ]);
    let (l0, l1) = (proxy.listeners[0], proxy.listeners[1]);
    let start = nginx.accepts();
    let mut granted = 0;
    for (round, addr) in [l0, l1, l0, l1].into_iter().enumerate() {
        let mut c = Conn::connect(addr);
        for t in 0..10 {
            assert_eq!(get_token(&mut c, round as u64 * 100 + t), Ok(200));
        }
        drop(c);
        // Wait until the connection is idle in this shard's pool before the next round.
        let m = wait_for(Duration::from_secs(5), "the connection idle", || {
            let m = proxy.metrics();
            (total(&m, "ringway_inflight_requests") == 0).then_some(m)
        });
        let now = total(&m, "ringway_takeover_granted_total");
        if round > 0 {
            assert!(now > granted, "round {round}: no takeover:\n{m}");
        }
        granted = now;
        assert_eq!(
            nginx.accepts() - start,
            1,
            "round {round}: a second TLS connection was made"
        );
    }
    proxy.assert_healthy();
}
