//! The scheduler: when each request slot sends, and what each shard runs.
//!
//! A *slot* is one request at a time: an HTTP/1.1 connection, or one stream of an HTTP/2
//! connection. In closed loop a slot sends its next request as soon as the previous answer
//! is in. In open loop (`--rate R`) the run's R requests per second are dealt out to the
//! slots on a fixed timetable (slot `g` of `S` sends at `start + g/R + k·S/R`), and latency
//! is measured from that *intended* time, not from when the request finally left: a stalled
//! server delays every request scheduled during the stall, and all of those show up in the
//! histogram (wrk2's correction of coordinated omission). Requests intended before the
//! warm-up ends are sent but not recorded. This module owns the timetable and the loops;
//! wire formats belong to `h1` and `h2`, numbers to `report`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{Plan, Stop};
use super::h1::{encode_request, H1Conn};
use super::h2::{self as h2c, H2Request};
use super::report::{ErrorKind, Tally};

/// How long a slot waits before trying again after a failed connect in closed loop, so a
/// closed port is counted rather than spun on.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// How often a shard publishes its counters for the progress line.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// The run's timeline, the same on every shard.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// When the first request is scheduled.
    pub start: Instant,
    /// When measuring starts (`start` + warm-up).
    pub measure_from: Instant,
    /// When no new request starts (duration runs).
    pub stop_at: Option<Instant>,
}

impl Clock {
    pub fn new(plan: &Plan, start: Instant) -> Clock {
        let measure_from = start + plan.warmup;
        let stop_at = match plan.stop {
            Stop::After(d) => Some(measure_from + d),
            Stop::Count(_) => None,
        };
        Clock {
            start,
            measure_from,
            stop_at,
        }
    }
}

/// One shard's live counters, written only by that shard, read by the progress printer.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ShardProgress {
    /// Responses received, warm-up included.
    pub responses: AtomicU64,
    /// Requests that failed without a response, warm-up included.
    pub errors: AtomicU64,
    /// The shard has finished.
    pub done: AtomicBool,
}

/// A slot's place in the timetable.
#[derive(Debug, Clone)]
struct Pace {
    /// Open loop: the next intended send time, and the time between two of this slot's sends.
    next: Option<(Instant, Duration)>,
    /// Count runs: measured requests this slot still sends.
    quota: Option<u64>,
}

/// The next request a slot should send.
#[derive(Debug, Clone, Copy)]
struct Turn {
    /// Latency is measured from here.
    intended: Instant,
    /// Recorded (after the warm-up).
    measured: bool,
}

impl Pace {
    fn new(plan: &Plan, clock: &Clock, slot: usize) -> Pace {
        let next = plan.rate.map(|rate| {
            let offset = Duration::from_secs_f64(slot as f64 / rate);
            let interval = Duration::from_secs_f64(plan.slots() as f64 / rate);
            (clock.start + offset, interval)
        });
        Pace {
            next,
            quota: plan.quota_of(slot),
        }
    }

    /// Takes the next turn, or `None` when the slot is finished.
    fn turn(&mut self, clock: &Clock) -> Option<Turn> {
        let now = Instant::now();
        let intended = match self.next {
            Some((t, _)) => t,
            None => now,
        };
        if let Some(stop) = clock.stop_at {
            if intended >= stop || now >= stop {
                return None;
            }
        }
        let measured = intended >= clock.measure_from;
        if measured {
            match &mut self.quota {
                Some(0) => return None,
                Some(q) => *q -= 1,
                None => {}
            }
        }
        if let Some((t, interval)) = &mut self.next {
            *t += *interval;
        }
        Some(Turn { intended, measured })
    }
}

/// What all slots of one shard share.
struct ShardState {
    plan: Rc<Plan>,
    clock: Clock,
    tally: RefCell<Tally>,
    /// Responses plus errors, warm-up included (for the progress line).
    seen: Cell<u64>,
    errors_seen: Cell<u64>,
    /// When the last measured response arrived.
    last: Cell<Option<Instant>>,
}

impl ShardState {
    fn response(&self, turn: Turn, status: u16, body: u64) {
        let now = Instant::now();
        self.seen.set(self.seen.get() + 1);
        let mut tally = self.tally.borrow_mut();
        tally.all_responses += 1;
        if turn.measured {
            let us = now.saturating_duration_since(turn.intended).as_micros() as u64;
            tally.response(status, us, body);
            self.last.set(Some(now));
        }
    }

    fn error(&self, turn: Turn, kind: ErrorKind) {
        self.seen.set(self.seen.get() + 1);
        self.errors_seen.set(self.errors_seen.get() + 1);
        if turn.measured {
            self.tally.borrow_mut().error(kind);
            self.last.set(Some(Instant::now()));
        }
    }

    fn publish(&self, p: &ShardProgress) {
        let errors = self.errors_seen.get();
        p.responses
            .store(self.seen.get() - errors, Ordering::Relaxed);
        p.errors.store(errors, Ordering::Relaxed);
    }

    fn connected(&self) {
        self.tally.borrow_mut().connects += 1;
    }
}

/// Waits until `t` (returns at once if it has passed).
async fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        glommio::timer::sleep(t - now).await;
    }
}

/// Runs one shard's share of the plan; returns its tally and its last measured response.
pub async fn run_shard(
    plan: Rc<Plan>,
    shard: usize,
    clock: Clock,
    progress: Arc<ShardProgress>,
) -> anyhow::Result<(Tally, Option<Instant>)> {
    let state = Rc::new(ShardState {
        plan: plan.clone(),
        clock,
        tally: RefCell::new(Tally::new()),
        seen: Cell::new(0),
        errors_seen: Cell::new(0),
        last: Cell::new(None),
    });
    let first = plan.first_connection_of(shard);
    let mut tasks = Vec::new();
    if plan.http2 {
        let req = Rc::new(H2Request::new(&plan)?);
        for conn in first..first + plan.connections_of(shard) {
            let st = state.clone();
            let req = req.clone();
            tasks.push(glommio::spawn_local(h2_connection(st, req, conn)).detach());
        }
    } else {
        let req: Rc<[u8]> = encode_request(&plan).into();
        for conn in first..first + plan.connections_of(shard) {
            let st = state.clone();
            let req = req.clone();
            tasks.push(glommio::spawn_local(h1_slot(st, req, conn)).detach());
        }
    }
    // Publish counters for the progress line; this task ends with the shard.
    let publisher = {
        let st = state.clone();
        let progress = progress.clone();
        glommio::spawn_local(async move {
            loop {
                st.publish(&progress);
                glommio::timer::sleep(PUBLISH_EVERY).await;
            }
        })
        .detach()
    };
    for t in tasks {
        let _ = t.await;
    }
    publisher.cancel();
    state.publish(&progress);
    let tally = state.tally.borrow().clone();
    Ok((tally, state.last.get()))
}

/// One HTTP/1.1 connection slot: keep-alive, or a fresh connection per request (`close`).
async fn h1_slot(st: Rc<ShardState>, req: Rc<[u8]>, slot: usize) {
    let plan = st.plan.clone();
    let mut pace = Pace::new(&plan, &st.clock, slot);
    let addr = plan.target.addr;
    let head = plan.method == "HEAD";
    let mut conn: Option<H1Conn> = None;
    if !plan.close {
        if let Ok(c) = H1Conn::connect(addr, plan.timeout).await {
            st.connected();
            conn = Some(c);
        }
    }
    sleep_until(st.clock.start).await;
    while let Some(turn) = pace.turn(&st.clock) {
        sleep_until(turn.intended).await;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match H1Conn::connect(addr, plan.timeout).await {
                Ok(c) => {
                    st.connected();
                    conn.insert(c)
                }
                Err(kind) => {
                    st.error(turn, kind);
                    if plan.rate.is_none() {
                        glommio::timer::sleep(CONNECT_BACKOFF).await;
                    }
                    continue;
                }
            },
        };
        match c.exchange(&req, head).await {
            Ok(resp) => {
                st.response(turn, resp.status, resp.body);
                if plan.close || !resp.reusable {
                    // Let the server close first, so the TIME_WAIT state stays on its side.
                    if let Some(mut c) = conn.take() {
                        c.drain_to_eof().await;
                    }
                }
            }
            Err(kind) => {
                conn = None;
                st.error(turn, kind);
            }
        }
    }
}

/// One HTTP/2 connection with `streams` slots; reconnects when the connection fails.
async fn h2_connection(st: Rc<ShardState>, req: Rc<H2Request>, conn_index: usize) {
    let plan = st.plan.clone();
    let streams = plan.streams;
    let mut paces: Vec<Pace> = (0..streams)
        .map(|s| Pace::new(&plan, &st.clock, conn_index * streams + s))
        .collect();
    let mut conn = h2c::connect(plan.target.addr, plan.timeout).await.ok();
    if conn.is_some() {
        st.connected();
    }
    sleep_until(st.clock.start).await;
    loop {
        let c = match conn.take() {
            Some(c) => c,
            None => match h2c::connect(plan.target.addr, plan.timeout).await {
                Ok(c) => {
                    st.connected();
                    c
                }
                Err(kind) => {
                    // Charge the failure to the slot whose turn is next.
                    let Some(turn) = paces.iter_mut().find_map(|p| p.turn(&st.clock)) else {
                        return;
                    };
                    st.error(turn, kind);
                    if plan.rate.is_none() {
                        glommio::timer::sleep(CONNECT_BACKOFF).await;
                    } else {
                        sleep_until(turn.intended).await;
                    }
                    continue;
                }
            },
        };
        let mut slots = Vec::with_capacity(streams);
        for pace in paces.drain(..) {
            let st = st.clone();
            let req = req.clone();
            let send = c.send.clone();
            slots.push(glommio::spawn_local(h2_stream(st, req, send, pace)).detach());
        }
        drop(c.send);
        let mut broken = false;
        for s in slots {
            if let Some((pace, failed)) = s.await {
                broken |= failed;
                paces.push(pace);
            }
        }
        let _ = c.driver.await;
        if !broken {
            return;
        }
    }
}

/// One HTTP/2 stream slot; returns its pace and whether it stopped on a connection error.
async fn h2_stream(
    st: Rc<ShardState>,
    req: Rc<H2Request>,
    mut send: h2::client::SendRequest<bytes::Bytes>,
    mut pace: Pace,
) -> (Pace, bool) {
    let timeout = st.plan.timeout;
    while let Some(turn) = pace.turn(&st.clock) {
        sleep_until(turn.intended).await;
        match h2c::exchange(&mut send, &req, timeout).await {
            Ok((status, body)) => st.response(turn, status, body),
            Err(e) => {
                st.error(turn, e.kind);
                if e.fatal {
                    return (pace, true);
                }
            }
        }
    }
    (pace, false)
}
