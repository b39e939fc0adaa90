//! Active health checks: one shard checks each server (servers are spread over the
//! shards, `Table::checker_of`), so a server gets one check per interval however many
//! shards there are. A check is one HTTP request on a new connection — HTTP/1.1 for
//! `HOST:PORT` and `https://` servers, HTTP/2 for `h2c://` and `h2://` ones — bounded as a
//! whole by the check's `timeout`: a server that hangs, answers garbage or closes fails
//! the check, and no check ever outlives its timeout.
//!
//! HAProxy's meanings: a server starts up; `fall` failed checks in a row take it down,
//! `rise` passed checks in a row bring it back. A change is applied on the checking shard
//! and sent to every other shard over the mesh (`ServerVerdict::CheckDown`/`CheckUp`):
//! a down server gets no new requests and its idle connections are closed on every
//! shard; requests in flight on it finish. The checking shard keeps the figures
//! `/metrics` shows per server (state, last change, checks failed).
//!
//! A server the passive checks took out is, when it has an active check, down for that
//! check too: it comes back after `rise` passed checks (HAProxy's `observe` with
//! `on-error mark-down`), not when a timer runs out.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use ringway_pool::Proto;

use super::{ServerVerdict, Transport, Upstreams};
use crate::config::CheckConfig;

/// How often the check scheduler looks for checks that are due.
const TICK: Duration = Duration::from_millis(10);
/// Most bytes of a check's response read before its status line must be complete.
const MAX_CHECK_HEAD: usize = 8 << 10;

/// One server's check state, on the shard that checks it.
#[derive(Debug, Clone)]
pub struct CheckState {
    next: Instant,
    running: bool,
    passes: u32,
    failures: u32,
    pub up: bool,
    pub checks: u64,
    pub failed: u64,
    /// When the state last changed (start-up counts as a change).
    pub last_change: SystemTime,
    /// Why the last check failed, for the log.
    last_error: String,
}

impl CheckState {
    /// A server's state when this shard starts checking it: up (HAProxy's start).
    fn new(now: Instant) -> CheckState {
        CheckState {
            next: now,
            running: false,
            passes: 0,
            failures: 0,
            up: true,
            checks: 0,
            failed: 0,
            last_change: SystemTime::now(),
            last_error: String::new(),
        }
    }
}

/// The checks this shard runs, by server index.
#[derive(Default)]
pub struct Checks {
    state: RefCell<HashMap<u32, CheckState>>,
}

impl Checks {
    /// Per server (by index): (up, seconds since the epoch of the last change, checks
    /// failed, checks sent), for the servers this shard checks.
    pub fn figures(&self) -> Vec<(u32, bool, f64, u64, u64)> {
        self.state
            .borrow()
            .iter()
            .map(|(&s, c)| {
                let t = c
                    .last_change
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                (s, c.up, t, c.failed, c.checks)
            })
            .collect()
    }
}

impl Upstreams {
    /// Runs this shard's share of the active checks until the shard stops.
    pub async fn check_loop(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(TICK).await;
            let table = self.table();
            let now = glommio::clock::now();
            let mut due = Vec::new();
            {
                let mut st = self.checks.state.borrow_mut();
                // Servers no longer checked here (a reload removed them or their check).
                st.retain(|&s, _| {
                    table.servers.get(s as usize).is_some_and(|i| {
                        !i.removed
                            && table
                                .backends
                                .get(i.backend)
                                .is_some_and(|b| b.cfg.check.is_some())
                    })
                });
                for (i, info) in table.servers.iter().enumerate() {
                    let server = i as u32;
                    if info.removed || table.checker_of(server) != self.shard {
                        continue;
                    }
                    let Some(check) = table
                        .backends
                        .get(info.backend)
                        .and_then(|b| b.cfg.check.clone())
                    else {
                        continue;
                    };
                    let s = st.entry(server).or_insert_with(|| CheckState::new(now));
                    if !s.running && s.next <= now {
                        s.running = true;
                        s.next = now + check.interval;
                        due.push((server, check));
                    }
                }
            }
            for (server, check) in due {
                let ups = self.clone();
                glommio::spawn_local(async move {
                    let result = ups.probe(server, &check).await;
                    ups.checked(server, &check, result);
                })
                .detach();
            }
        }
    }

    /// `server` went down on every shard without its check saying so (passive checks took
    /// it out; see `Upstreams::eject`): if this shard checks it, its check state goes down
    /// too, so that `rise` passed checks — and only they — bring it back with `CheckUp`.
    /// The state is made here if the checks have not started yet, so the server can
    /// never stay down with a check state that says up.
    pub(super) fn mark_check_down(&self, server: u32) {
        let table = self.table();
        let checked = table.servers.get(server as usize).is_some_and(|i| {
            !i.removed
                && table
                    .backends
                    .get(i.backend)
                    .is_some_and(|b| b.cfg.check.is_some())
        });
        if !checked || table.checker_of(server) != self.shard {
            return;
        }
        let mut st = self.checks.state.borrow_mut();
        let s = st
            .entry(server)
            .or_insert_with(|| CheckState::new(glommio::clock::now()));
        if s.up {
            s.up = false;
            s.passes = 0;
            s.last_change = SystemTime::now();
            tracing::info!(
                server = %table.servers[server as usize].addr,
                "health check: server is down (taken out by passive checks); it comes back after its rise count of passed checks"
            );
        }
    }

    /// One check of `server`, bounded by the check's timeout as a whole.
    async fn probe(&self, server: u32, check: &CheckConfig) -> Result<u16, String> {
        let table = self.table();
        let Some(info) = table.servers.get(server as usize).cloned() else {
            return Err("unknown server".into());
        };
        let h2 = table
            .keys
            .key(info.slot)
            .is_some_and(|k| k.proto == Proto::Http2);
        let tls = table.backend_tls.clone();
        let limit = check.timeout;
        // A server that expects PROXY headers (`send-proxy`) gets one on its checks too:
        // LOCAL (v2) or UNKNOWN (v1), the spec's form for a proxy's own connections.
        let preface = table
            .backends
            .get(info.backend)
            .and_then(|b| b.cfg.send_proxy)
            .map(super::proxy_out::local)
            .unwrap_or_default();
        let run = async move {
            let transport = match (&info.tls_name, &tls) {
                (Some(name), Some(t)) => {
                    let config = if h2 { &t.config_h2 } else { &t.config };
                    let (c, n) = (config.clone(), name.clone());
                    Transport::connect_tls(info.addr, limit, c, n, h2, &preface).await
                }
                _ => Transport::connect_tcp_with(info.addr, limit, &preface).await,
            }
            .map_err(|e| format!("connect: {e}"))?;
            transport.set_timeouts(Some(limit));
            let authority = match &info.tls_name {
                Some(n) => format!("{}:{}", n.to_str(), info.addr.port()),
                None => info.addr.to_string(),
            };
            if h2 {
                probe_h2(transport, check, &authority, info.tls_name.is_some()).await
            } else {
                probe_h1(transport, check, &authority).await
            }
        };
        match glommio::timer::timeout(limit, async { Ok(run.await) }).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    /// Counts a check's result; `fall` failures in a row take the server down, `rise`
    /// passes bring it up, on every shard.
    fn checked(&self, server: u32, check: &CheckConfig, result: Result<u16, String>) {
        let result = match result {
            Ok(status) if check.status.contains(status) => Ok(status),
            Ok(status) => Err(format!("status {status}, expected {}", check.status)),
            Err(e) => Err(e),
        };
        let change = {
            let mut st = self.checks.state.borrow_mut();
            let Some(s) = st.get_mut(&server) else {
                return;
            };
            s.running = false;
            s.checks += 1;
            match &result {
                Ok(_) => {
                    s.passes += 1;
                    s.failures = 0;
                    (!s.up && s.passes >= check.rise).then_some(true)
                }
                Err(e) => {
                    s.failed += 1;
                    s.failures += 1;
                    s.passes = 0;
                    s.last_error.clone_from(e);
                    (s.up && s.failures >= check.fall).then_some(false)
                }
            }
            .inspect(|&up| {
                s.up = up;
                s.last_change = SystemTime::now();
            })
        };
        let Some(up) = change else {
            return;
        };
        let table = self.table();
        let (addr, backend) = table
            .servers
            .get(server as usize)
            .map_or((String::new(), String::new()), |s| {
                (s.addr.to_string(), s.backend_name.to_string())
            });
        let verdict = if up {
            tracing::info!(%backend, server = %addr, rise = check.rise, "health check: server is up");
            ServerVerdict::CheckUp
        } else {
            let why = result.err().unwrap_or_default();
            tracing::warn!(%backend, server = %addr, fall = check.fall, error = %why, "health check: server is down");
            ServerVerdict::CheckDown
        };
        self.apply_verdict(server, verdict);
        self.broadcast(server, verdict);
    }
}

/// An HTTP/1.1 check: the request, then the status line of the answer.
async fn probe_h1(mut t: Transport, check: &CheckConfig, authority: &str) -> Result<u16, String> {
    let req = format!(
        "{} {} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ringway-health-check\r\nConnection: close\r\n\r\n",
        check.method, check.path
    );
    t.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    t.flush().await.map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 1024];
    let mut have = 0;
    loop {
        if let Some(end) = buf[..have].windows(2).position(|w| w == b"\r\n") {
            let status = parse_status_line(&buf[..end]);
            t.arm_reset();
            return status;
        }
        if have == buf.len() {
            if buf.len() >= MAX_CHECK_HEAD {
                return Err("no status line in the first 8 KiB".into());
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = t
            .read(&mut buf[have..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before a status line".into());
        }
        have += n;
    }
}

/// `HTTP/1.x NNN ...` -> NNN; anything else is garbage.
fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let garbage = || {
        format!(
            "not an HTTP status line: {:?}",
            String::from_utf8_lossy(&line[..line.len().min(40)])
        )
    };
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))
        .ok_or_else(garbage)?;
    if rest.len() < 3
        || !rest[..3].iter().all(u8::is_ascii_digit)
        || rest.get(3).is_some_and(|&c| c != b' ')
    {
        return Err(garbage());
    }
    let n = (rest[0] - b'0') as u16 * 100 + (rest[1] - b'0') as u16 * 10 + (rest[2] - b'0') as u16;
    if !(100..=599).contains(&n) {
        return Err(garbage());
    }
    Ok(n)
}

/// An HTTP/2 check (h2c:// with prior knowledge, or h2:// after ALPN): one stream.
async fn probe_h2(
    t: Transport,
    check: &CheckConfig,
    authority: &str,
    tls: bool,
) -> Result<u16, String> {
    let settings = ringway_h2mux::client::ClientSettings::default();
    t.set_timeouts(None);
    let (mut send, driver) = ringway_h2mux::client::handshake(t, &settings)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let drive = glommio::spawn_local(async move {
        let _ = driver.await;
    });
    let result = async move {
        let scheme = if tls { "https" } else { "http" };
        let req = http::Request::builder()
            .method(check.method.as_str())
            .uri(format!("{scheme}://{authority}{}", check.path))
            .header("user-agent", "ringway-health-check")
            .body(())
            .map_err(|e| format!("request: {e}"))?;
        send = send.ready().await.map_err(|e| format!("HTTP/2: {e}"))?;
        let (resp, _) = send
            .send_request(req, true)
            .map_err(|e| format!("HTTP/2: {e}"))?;
        let resp = resp.await.map_err(|e| format!("HTTP/2: {e}"))?;
        drop(send);
        Ok::<u16, String>(resp.status().as_u16())
    }
    .await;
    drop(drive);
    result
}

#[cfg(test)]
mod tests {
    use super::parse_status_line;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Ok(503));
        assert!(parse_status_line(b"HTTP/1.1 20 OK").is_err());
        assert!(parse_status_line(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_status_line(b"HTTP/1.1 999 x").is_err());
        assert!(parse_status_line(b"").is_err());
    }
}
