// Unless explicitly stated otherwise all files in this repository are licensed
// under the MIT/Apache-2.0 License, at your convenience
//
// This product includes software developed at Datadog (https://www.datadoghq.com/). Copyright 2020 Datadog, Inc.
//
use crate::{
    reactor::{Reactor, TimerSlot},
    sys::{self, Source, SourceType},
};
use futures_lite::ready;
use nix::sys::socket::MsgFlags;
use std::{
    cell::Cell,
    io,
    net::Shutdown,
    os::unix::io::{AsRawFd, FromRawFd, RawFd},
    rc::{Rc, Weak},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

type Result<T> = crate::Result<T, ()>;

/// Root trait for socket stream receive buffer
pub trait RxBuf {
    fn read(&mut self, buf: &mut [u8]) -> usize;
    fn peek(&self, buf: &mut [u8]) -> usize;
    fn is_empty(&self) -> bool;
    fn as_bytes(&self) -> &[u8];
    fn consume(&mut self, amt: usize);
    fn buffer_size(&self) -> usize;
    fn handle_result(&mut self, result: usize);
    fn unfilled(&mut self) -> &mut [u8];
}

#[derive(Debug, Default)]
pub struct NonBuffered;

impl RxBuf for NonBuffered {
    fn read(&mut self, _buf: &mut [u8]) -> usize {
        0
    }

    fn peek(&self, _buf: &mut [u8]) -> usize {
        0
    }

    fn is_empty(&self) -> bool {
        true
    }

    fn as_bytes(&self) -> &[u8] {
        &[]
    }

    fn consume(&mut self, _amt: usize) {}

    fn buffer_size(&self) -> usize {
        0
    }

    fn handle_result(&mut self, _result: usize) {}

    fn unfilled(&mut self) -> &mut [u8] {
        &mut []
    }
}

/// Trait for receive buffer implementations
pub trait Buffered: RxBuf {}

/// Non-shared fixed sized receive buffer allocated
/// when buffered stream is created
#[derive(Debug)]
pub struct Preallocated {
    buf: Vec<u8>,
    head: usize,
    tail: usize,
    cap: usize,
}

impl Preallocated {
    const DEFAULT_BUFFER_SIZE: usize = 8192;

    /// Creates a fixed sized receive buffer
    pub fn new(size: usize) -> Self {
        Self {
            buf: vec![0; size],
            tail: 0,
            head: 0,
            cap: size,
        }
    }
}

impl Default for Preallocated {
    fn default() -> Self {
        Self::new(Self::DEFAULT_BUFFER_SIZE)
    }
}

impl Preallocated {
    fn len(&self) -> usize {
        self.tail - self.head
    }
}

impl Buffered for Preallocated {}

impl RxBuf for Preallocated {
    fn read(&mut self, buf: &mut [u8]) -> usize {
        let sz = std::cmp::min(self.len(), buf.len());
        if sz > 0 {
            buf[..sz].copy_from_slice(&self.buf[self.head..self.head + sz]);
            self.head += sz;
        }
        sz
    }

    fn peek(&self, buf: &mut [u8]) -> usize {
        let sz = std::cmp::min(self.len(), buf.len());
        if sz > 0 {
            buf[..sz].copy_from_slice(&self.buf[self.head..self.head + sz]);
        }
        sz
    }

    fn is_empty(&self) -> bool {
        self.head >= self.tail
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.head..self.tail]
    }

    fn consume(&mut self, amt: usize) {
        self.head += std::cmp::min(self.len(), amt);
    }

    fn buffer_size(&self) -> usize {
        self.cap
    }

    fn handle_result(&mut self, result: usize) {
        self.tail += result;
    }

    fn unfilled(&mut self) -> &mut [u8] {
        if self.len() == 0 {
            self.head = 0;
            self.tail = 0;
        }
        &mut self.buf[self.tail..]
    }
}

/// A stream's read or write timeout.
///
/// ringway: lazy. Its timer stays registered in the reactor across operations instead of
/// being inserted when an operation has to wait and removed when it completes (a
/// `BTreeMap` and an `AHashMap` insert and remove, and a waker clone, several times per
/// keep-alive request). An operation that waits only records its own deadline (and puts
/// its task's waker in the timer's slot); one that completes only clears them. The
/// registered timer fires at or before the deadline of the operation waiting then:
/// `check` compares the reactor's clock with that operation's own deadline and fails
/// with `TimedOut` only once it has passed, and `maybe_set_timer` registers the timer
/// again, for that deadline, when it fired early (for an earlier operation). A timer
/// firing with no operation waiting wakes nobody. The stream removes it when dropped.
#[derive(Debug)]
struct Timeout {
    id: u64,
    timeout: Cell<Option<Duration>>,
    /// ringway: the deadline of the operation in progress, set when it first waits (the
    /// clock then plus the timeout then); `None` between operations.
    deadline: Cell<Option<Instant>>,
    /// ringway: when the timer registered in the reactor fires (or fired: it is
    /// still in the reactor's by-id map then); `None`: never registered.
    armed: Cell<Option<Instant>>,
    /// ringway: what the registered timer wakes (made at the first wait).
    slot: std::cell::OnceCell<Rc<TimerSlot>>,
}

impl Timeout {
    fn new(id: u64) -> Self {
        Self {
            id,
            timeout: Cell::new(None),
            deadline: Cell::new(None),
            armed: Cell::new(None),
            slot: std::cell::OnceCell::new(),
        }
    }

    fn get(&self) -> Option<Duration> {
        self.timeout.get()
    }

    fn set(&self, dur: Option<Duration>) -> Result<()> {
        if let Some(dur) = dur.as_ref() {
            if dur.as_nanos() == 0 {
                return Err(io::Error::from_raw_os_error(libc::EINVAL).into());
            }
        }
        self.timeout.set(dur);
        Ok(())
    }

    /// The operation in progress waits, woken by `waker`: its deadline is set at its
    /// first wait (a changed timeout applies to the next operation), and the
    /// registered timer must fire at or before it.
    fn maybe_set_timer(&self, reactor: &Reactor, waker: &Waker) {
        let deadline = match self.deadline.get() {
            Some(d) => d,
            None => {
                let Some(timeout) = self.timeout.get() else {
                    return;
                };
                // The task's clock (at most this poll old), not the reactor's (up to a
                // loop turn old): a deadline counted from an older clock could fail an
                // operation early.
                let d = crate::clock::now() + timeout;
                self.deadline.set(Some(d));
                d
            }
        };
        let slot = self.slot.get_or_init(|| Rc::new(TimerSlot::default()));
        slot.set_waker(waker);
        match self.armed.get() {
            // Registered, not fired yet, and due no later than this deadline: when it
            // fires, `check` sees whether this deadline passed.
            Some(at) if at <= deadline && at >= reactor.timer_clock() => {}
            _ => {
                reactor.insert_timer_slot(self.id, deadline, slot.clone());
                self.armed.set(Some(deadline));
            }
        }
    }

    /// The operation in progress completed (or failed): the timer stays registered,
    /// waking nobody.
    fn cancel_timer(&self, _reactor: &Reactor) {
        if self.deadline.take().is_some() {
            if let Some(slot) = self.slot.get() {
                slot.clear();
            }
        }
    }

    /// `TimedOut` once the deadline of the operation in progress has passed (by the
    /// reactor's clock, which is never ahead: never early, late by at most a loop turn
    /// after the timer fired); the operation ends then.
    fn check(&self, reactor: &Reactor) -> io::Result<()> {
        if let Some(deadline) = self.deadline.get() {
            if reactor.timer_clock() > deadline {
                self.cancel_timer(reactor);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "Operation timed out",
                ));
            }
        }
        Ok(())
    }

    /// ringway: removes the registered timer (the stream is dropped).
    fn unregister(&self, reactor: &Reactor) {
        if self.armed.take().is_some() {
            reactor.remove_timer(self.id);
        }
        self.cancel_timer(reactor);
    }
}

/// ringway: the most one ring `SEND` carries; a longer write is a short write.
pub(crate) const SEND_MAX: usize = 256 * 1024;
/// ringway: writes of at least this many bytes are sent with a `send` system call from
/// the caller's buffer instead of a ring `SEND` of an owned copy (see `poll_write`).
pub(crate) const DIRECT_SEND_MIN: usize = 4 * 1024;
/// ringway: size of the pooled I/O buffers: a write up to this long takes one, and a
/// receive asks for at most this much.
const IO_POOLED: usize = 16 * 1024;
/// ringway: how many free I/O buffers a thread keeps (1 MiB).
const IO_POOL_CAP: usize = 64;

thread_local! {
    static IO_POOL: std::cell::RefCell<Vec<sys::DmaBuffer>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// An owned buffer of exactly `len` bytes for a ring send or receive: from this thread's
/// pool when it fits a pooled one, else its own allocation. The source that carries it
/// to the kernel owns it until the completion, so a cancelled operation frees it then.
fn take_io_buffer(len: usize) -> sys::DmaBuffer {
    if len <= IO_POOLED {
        if let Some(mut b) = IO_POOL.with(|p| p.borrow_mut().pop()) {
            if b.set_len_within_capacity(len) {
                return b;
            }
        }
        let mut b = sys::DmaBuffer::new(IO_POOLED).expect("I/O buffer allocation");
        b.trim_to_size(len);
        return b;
    }
    sys::DmaBuffer::new(len).expect("I/O buffer allocation")
}

/// Gives a send or receive buffer back to this thread's pool (pooled size only, up to
/// the cap; others are freed).
fn give_io_buffer(mut b: sys::DmaBuffer) {
    if b.sys_capacity() == Some(IO_POOLED) && b.set_len_within_capacity(IO_POOLED) {
        IO_POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < IO_POOL_CAP {
                p.push(b);
            }
        });
    }
}

#[derive(Debug)]
pub(crate) struct NonBufferedStream<S> {
    reactor: Weak<Reactor>,
    stream: S,
    source_tx: Option<Source>,
    source_rx: Option<Source>,
    write_timeout: Timeout,
    read_timeout: Timeout,
    /// ringway: bytes a ring receive brought in that no read has taken yet (a read
    /// dropped after its receive completed, or a caller buffer shorter than what came):
    /// the buffer, the first byte not yet taken, the end. Boxed: almost always empty.
    rx_stash: Option<Box<(sys::DmaBuffer, usize, usize)>>,
    /// ringway: the last receive filled its buffer, so more is probably waiting: the
    /// next read receives at once instead of waiting for readiness first.
    rx_more: bool,
    /// ringway: the multishot receive armed on this stream (buffers from the executor's
    /// provided-buffer ring), with the bytes it brought that no read took yet.
    rx_ms: Option<Source>,
    /// ringway: the last multishot ended because the ring was out of buffers: the next
    /// read goes through the poll + `RECV` path.
    rx_backoff: bool,
    /// ringway: a receive from the provided-buffer ring was armed on this stream before.
    /// The first one is a single receive, not a multishot: a connection that closes
    /// after one request (`Connection: close`) then has nothing armed when it closes,
    /// so no cancel goes through the ring; from the second read on, it is a multishot.
    rx_ring_used: bool,
    /// ringway: every receive from the ring is a single one, never a multishot (set by
    /// [`Self::set_recv_multishot`]): a multishot goes on taking in whatever arrives,
    /// and a body that a caller splices must stay in the socket.
    rx_single: bool,
}

/// ringway: a stream's timers stay registered between its operations (see
/// [`Timeout`]): dropping it removes them from the reactor.
impl<S> Drop for NonBufferedStream<S> {
    fn drop(&mut self) {
        if let Some(reactor) = self.reactor.upgrade() {
            self.read_timeout.unregister(&reactor);
            self.write_timeout.unregister(&reactor);
        }
    }
}

/// ringway: what a multishot receive has for a read.
enum MsTake {
    /// This many bytes were copied out.
    Data(usize),
    /// Nothing yet: wait for its next CQE.
    Pending,
    /// It ended with this result (0 EOF, < 0 `-errno`, > 0 bytes already taken).
    Ended(i32),
}

impl<S: AsRawFd> NonBufferedStream<S> {
    fn init(&mut self) {
        let reactor = self.reactor.upgrade().unwrap();
        // ringway: with multishot receives the first read arms one; no poll needed.
        if reactor.has_recv_ring() {
            return;
        }
        let stream_fd = self.stream.as_raw_fd();
        self.source_rx = Some(reactor.poll_read_ready(stream_fd));
    }

    /// ringway: copies what the armed multishot brought into `buf`, giving each buffer
    /// back to the ring once it is all taken.
    fn ms_take(&self, buf: &mut [u8]) -> MsTake {
        let Some(src) = self.rx_ms.as_ref() else {
            return MsTake::Ended(-libc::ECANCELED);
        };
        let mut st = src.source_type_mut();
        let SourceType::SockRecvMulti(m) = &mut *st else {
            unreachable!("a multishot source")
        };
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = m.chunks.front_mut() else {
                break;
            };
            let rest = front.rest();
            let k = rest.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&rest[..k]);
            n += k;
            front.off += k as u32;
            if front.off >= front.len {
                m.chunks.pop_front();
            }
        }
        if n > 0 || !m.chunks.is_empty() {
            // (0 only for an empty `buf` with bytes queued: never "ended" then.)
            MsTake::Data(n)
        } else if let Some(res) = m.end {
            MsTake::Ended(res)
        } else {
            MsTake::Pending
        }
    }

    /// ringway: whether the armed multishot has bytes or its end for a read.
    fn ms_ready(&self) -> bool {
        self.rx_ms.as_ref().is_some_and(|src| match &*src.source_type() {
            SourceType::SockRecvMulti(m) => !m.chunks.is_empty() || m.end.is_some(),
            _ => false,
        })
    }

    /// ringway: the multishot path of a read. `None`: no multishot (any more); go on
    /// with the poll + `RECV` path or arm a new one.
    fn poll_read_ms(
        &mut self,
        reactor: &Reactor,
        cx: &Context<'_>,
        buf: &mut [u8],
    ) -> Option<Poll<io::Result<usize>>> {
        self.rx_ms.as_ref()?;
        match self.ms_take(buf) {
            MsTake::Data(n) => {
                self.read_timeout.cancel_timer(reactor);
                Some(Poll::Ready(Ok(n)))
            }
            MsTake::Pending => {
                if let Err(e) = self.read_timeout.check(reactor) {
                    // The multishot stays armed: what it brings waits for the next read.
                    return Some(Poll::Ready(Err(e)));
                }
                let src = self.rx_ms.as_ref().unwrap();
                src.add_waiter_single(cx.waker());
                self.read_timeout.maybe_set_timer(reactor, cx.waker());
                Some(Poll::Pending)
            }
            MsTake::Ended(res) => {
                self.rx_ms = None;
                match res {
                    0 => {
                        self.read_timeout.cancel_timer(reactor);
                        Some(Poll::Ready(Ok(0)))
                    }
                    r if r == -libc::ENOBUFS => {
                        // The ring ran dry: the bytes are still in the socket. This
                        // stream reads through poll + RECV until a read completes.
                        self.rx_backoff = true;
                        None
                    }
                    r if r == -libc::ECANCELED || r > 0 => None,
                    r => {
                        self.read_timeout.cancel_timer(reactor);
                        Some(Poll::Ready(Err(io::Error::from_raw_os_error(-r))))
                    }
                }
            }
        }
    }

    /// ringway: arms a multishot receive if this stream may (a ring with enough free
    /// buffers, no back-off, nothing of the poll + `RECV` path pending). A readiness
    /// poll (it carries nothing) is dropped for it.
    fn try_arm_ms(&mut self, reactor: &Reactor, cx: &Context<'_>) -> bool {
        if self.rx_backoff || self.rx_stash.is_some() || self.rx_more {
            return false;
        }
        if let Some(src) = self.source_rx.as_ref() {
            if !matches!(&*src.source_type(), SourceType::PollAdd) {
                return false;
            }
        }
        let multishot = self.rx_ring_used && !self.rx_single;
        let Some(src) = reactor.queued_recv_multishot(self.stream.as_raw_fd(), multishot) else {
            return false;
        };
        self.rx_ring_used = true;
        self.source_rx = None;
        src.add_waiter_single(cx.waker());
        self.read_timeout.maybe_set_timer(reactor, cx.waker());
        self.rx_ms = Some(src);
        true
    }

    /// ringway: ends an armed multishot receive that holds no bytes, synchronously, so
    /// that the stream is quiet ([`Self::io_quiet`]) and its fd can move to another
    /// shard. Bytes it brought before it ended stay queued (the stream then is not
    /// quiet and stays where it is). Returns whether no multishot is armed any more.
    pub(crate) fn quiesce(&mut self) -> bool {
        let Some(src) = self.rx_ms.as_ref() else {
            return true;
        };
        let ended = |src: &Source| match &*src.source_type() {
            SourceType::SockRecvMulti(m) => m.chunks.is_empty().then_some(m.end.is_some()),
            _ => None,
        };
        match ended(src) {
            // Bytes wait in it: they must be read here.
            None => return false,
            // Ended with nothing queued (an EOF or error the socket still shows).
            Some(true) => {
                self.rx_ms = None;
                return true;
            }
            Some(false) => {}
        }
        let submitted = src.inner.borrow().enqueued.as_ref().is_some_and(|e| {
            e.status == crate::sys::source::EnqueuedStatus::Dispatched
        });
        if submitted {
            let Some(reactor) = self.reactor.upgrade() else {
                return false;
            };
            if reactor.sync_cancel_multishot(src).is_err() {
                return false;
            }
            if ended(src) != Some(true) {
                return false;
            }
        }
        // Never submitted (dropping it withdraws it), or ended with nothing queued.
        self.rx_ms = None;
        true
    }

    /// ringway: ends every receive this stream has in the kernel, so that the caller may
    /// read the socket around the stream (splice(2)) without bytes coming out of order:
    /// an armed multishot is cancelled synchronously, also when it holds bytes (they stay
    /// queued for [`Self::try_read_buffered`], and its end comes after them). A `RECV`
    /// of the poll + `RECV` path, in flight or completed and not read yet, cannot be
    /// ended so: `false`, and the caller reads normally. Returns whether nothing of this
    /// stream receives in the kernel any more; the next ordinary read arms receives again.
    pub(crate) fn stop_receives(&mut self) -> bool {
        if let Some(src) = self.source_rx.as_ref() {
            if matches!(&*src.source_type(), SourceType::SockRecv(_)) {
                return false;
            }
        }
        let Some(src) = self.rx_ms.as_ref() else {
            return true;
        };
        let ended = |src: &Source| match &*src.source_type() {
            SourceType::SockRecvMulti(m) => m.end.is_some(),
            _ => false,
        };
        if ended(src) {
            return true;
        }
        let submitted = src.inner.borrow().enqueued.as_ref().is_some_and(|e| {
            e.status == crate::sys::source::EnqueuedStatus::Dispatched
        });
        if !submitted {
            // Never handed to the kernel (so it holds nothing): dropping it withdraws it.
            self.rx_ms = None;
            return true;
        }
        let Some(reactor) = self.reactor.upgrade() else {
            return false;
        };
        reactor.sync_cancel_multishot(src).is_ok() && ended(src)
    }

    /// ringway: whether receives from the ring may be multishots (the default) or are
    /// all single ones, each taking one buffer's worth of what is there when a read asks.
    pub(crate) fn set_recv_multishot(&mut self, on: bool) {
        self.rx_single = !on;
    }

    /// ringway: waits until the socket is readable through a one-shot readiness poll
    /// only, never a receive, under the read timeout: for a caller that reads the socket
    /// itself after [`Self::stop_receives`]. A completed poll is used up by the call
    /// that returns it, so the next wait arms a fresh one.
    pub(crate) fn poll_socket_readable(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        let reactor = self.reactor.upgrade().unwrap();
        let reactor = reactor.as_ref();
        let state = self.source_rx.as_ref().map(|src| {
            let poll = matches!(&*src.source_type(), SourceType::PollAdd);
            (poll, src.result().is_some())
        });
        match state {
            Some((true, true)) => {
                self.source_rx = None;
                self.read_timeout.cancel_timer(reactor);
                return Poll::Ready(Ok(()));
            }
            Some((true, false)) => {}
            Some((false, _)) => {
                return Poll::Ready(Err(io::Error::other(
                    "a receive of the stream is in the kernel",
                )))
            }
            None => self.source_rx = Some(reactor.poll_read_ready(self.stream.as_raw_fd())),
        }
        poll_err!(self.read_timeout.check(reactor));
        let source = self.source_rx.as_ref().unwrap();
        source.add_waiter_single(cx.waker());
        self.read_timeout.maybe_set_timer(reactor, cx.waker());
        Poll::Pending
    }

    /// ringway: waits until the socket is writable through a one-shot readiness poll,
    /// under the write timeout: for a caller that writes the socket itself (splice(2)).
    /// Between two writes nothing of the stream is in flight, so the caller's bytes
    /// cannot overtake a send of the stream's.
    pub(crate) fn poll_socket_writable(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        let reactor = self.reactor.upgrade().unwrap();
        let reactor = reactor.as_ref();
        let state = self.source_tx.as_ref().map(|src| {
            let poll = matches!(&*src.source_type(), SourceType::PollAdd);
            (poll, src.result().is_some())
        });
        match state {
            Some((true, true)) => {
                self.source_tx = None;
                self.write_timeout.cancel_timer(reactor);
                return Poll::Ready(Ok(()));
            }
            Some((true, false)) => {}
            Some((false, _)) => {
                return Poll::Ready(Err(io::Error::other(
                    "a send of the stream is in the kernel",
                )))
            }
            None => self.source_tx = Some(reactor.poll_write_ready(self.stream.as_raw_fd())),
        }
        poll_err!(self.write_timeout.check(reactor));
        let source = self.source_tx.as_ref().unwrap();
        source.add_waiter_single(cx.waker());
        self.write_timeout.maybe_set_timer(reactor, cx.waker());
        Poll::Pending
    }

    /// ringway: what the stream holds that the kernel already handed over (a
    /// non-blocking peek at the socket does not see it): `Some(true)` bytes,
    /// `Some(false)` only an EOF or error, `None` nothing.
    pub(crate) fn rx_buffered(&self) -> Option<bool> {
        if self.rx_stash.is_some() {
            return Some(true);
        }
        if let Some(src) = self.source_rx.as_ref() {
            if matches!(&*src.source_type(), SourceType::SockRecv(_)) {
                if let Some(r) = src.result() {
                    return Some(matches!(r, Ok(n) if n > 0));
                }
            }
        }
        let src = self.rx_ms.as_ref()?;
        match &*src.source_type() {
            SourceType::SockRecvMulti(m) if !m.chunks.is_empty() => Some(true),
            SourceType::SockRecvMulti(m) => match m.end {
                Some(r) if r <= 0 && r != -libc::ENOBUFS && r != -libc::ECANCELED => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// ringway: a read that never waits, of what the stream already holds:
    /// `Some(Ok(n))` bytes (0: EOF), `Some(Err)` its error, `Some(Err(WouldBlock))`
    /// nothing yet while a multishot is armed (the socket must not be read around it,
    /// or bytes would come out of order), `None` nothing held: the caller may read the
    /// socket itself.
    pub(crate) fn try_read_buffered(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        if let Some(n) = self.take_stash(buf) {
            return Some(Ok(n));
        }
        self.rx_ms.as_ref()?;
        match self.ms_take(buf) {
            MsTake::Data(n) => Some(Ok(n)),
            MsTake::Pending => Some(Err(io::ErrorKind::WouldBlock.into())),
            MsTake::Ended(0) => Some(Ok(0)),
            MsTake::Ended(r) if r == -libc::ENOBUFS || r == -libc::ECANCELED || r > 0 => {
                if r == -libc::ENOBUFS {
                    self.rx_backoff = true;
                }
                self.rx_ms = None;
                None
            }
            MsTake::Ended(r) => {
                self.rx_ms = None;
                Some(Err(io::Error::from_raw_os_error(-r)))
            }
        }
    }

    /// ringway: sends what the armed multishot brought, at most `max` bytes, straight
    /// from the ring's buffers to the socket `fd` in one `sendmsg` that never waits
    /// (`MSG_DONTWAIT | MSG_NOSIGNAL`), and consumes what the socket took: a buffer sent
    /// whole goes back to the ring. No copy through user space. `None`: the stream holds
    /// no multishot bytes (nothing, or bytes a single receive brought, or only an end):
    /// read the ordinary way. `Some(Err(_))` is `fd`'s error (`WouldBlock`: it is full);
    /// the bytes stay queued then.
    pub(crate) fn send_buffered(&mut self, fd: RawFd, max: usize) -> Option<io::Result<usize>> {
        if self.rx_stash.is_some() || max == 0 {
            return None;
        }
        let src = self.rx_ms.as_ref()?;
        let mut st = src.source_type_mut();
        let SourceType::SockRecvMulti(m) = &mut *st else {
            return None;
        };
        if m.chunks.is_empty() {
            return None;
        }
        // MAX_QUEUED_CHUNKS bounds what a stream queues, so this many iovecs take it all.
        const IOV: usize = 16;
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; IOV];
        let (mut cnt, mut total) = (0, 0);
        for c in m.chunks.iter() {
            if cnt == IOV || total == max {
                break;
            }
            let rest = c.rest();
            let k = rest.len().min(max - total);
            iov[cnt] = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: k,
            };
            cnt += 1;
            total += k;
        }
        // SAFETY: an all-zero msghdr is a valid empty one.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = cnt as _;
        // SAFETY: the iovecs point into ring buffers the chunks hold, alive and not
        // written by the kernel while queued here, for the length of the call.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Some(Err(io::Error::last_os_error()));
        }
        let mut left = n as usize;
        while left > 0 {
            let Some(front) = m.chunks.front_mut() else {
                break;
            };
            let k = ((front.len - front.off) as usize).min(left);
            front.off += k as u32;
            left -= k;
            if front.off >= front.len {
                m.chunks.pop_front();
            }
        }
        Some(Ok(n as usize))
    }

    pub(crate) fn try_peek(&self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        super::yolo_peek(self.stream.as_raw_fd(), buf)
    }

    pub(crate) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let source = self.reactor.upgrade().unwrap().recv(
            self.stream.as_raw_fd(),
            buf.len(),
            MsgFlags::MSG_PEEK,
        );

        let sz = source.collect_rw().await?;
        match source.extract_source_type() {
            SourceType::SockRecv(mut src) => {
                buf[0..sz].copy_from_slice(&src.take().unwrap().as_bytes()[0..sz]);
            }
            _ => unreachable!(),
        }
        Ok(sz)
    }

    /// ringway: reads go through the ring. A read first waits for readiness with the
    /// one-shot `POLL_ADD` (holding no buffer, as an idle connection must), then queues a
    /// `RECV` into a buffer from the thread's pool without entering the kernel (the
    /// executor submits it with everything else queued in this loop turn), and returns
    /// what it brought once it completes. A receive that filled its buffer lets the next
    /// read receive at once, without the readiness step; a short one arms the poll early,
    /// as glommio did after a short `recv`. Bytes a completed receive brought that no
    /// read took (its read was dropped, or asked for less) wait in `rx_stash` and are
    /// what the next read returns. A read dropped while its receive is in flight leaves
    /// the source to the reactor, which cancels it; the source owns its buffer, so the
    /// kernel never writes into freed memory.
    pub(crate) fn poll_read(
        &mut self,
        cx: &Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(n) = self.take_stash(buf) {
            return Poll::Ready(Ok(n));
        }
        let reactor = self.reactor.upgrade().unwrap();
        let reactor = reactor.as_ref();
        if let Some(p) = self.poll_read_ms(reactor, cx, buf) {
            return p;
        }
        // No multishot armed: arm one unless the poll + RECV path has something
        // pending (a receive in flight, stashed bytes) or the ring ran dry lately.
        if self.try_arm_ms(reactor, cx) {
            return Poll::Pending;
        }

        let state = self.source_rx.as_ref().map(|src| {
            let recv = matches!(&*src.source_type(), SourceType::SockRecv(_));
            (recv, src.result())
        });
        match state {
            // A receive completed: hand over what it brought.
            Some((true, Some(result))) => {
                self.read_timeout.cancel_timer(reactor);
                let source = self.source_rx.take().unwrap();
                let got = match source.extract_source_type() {
                    SourceType::SockRecv(got) => got,
                    _ => unreachable!(),
                };
                match result {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Some(got) = got {
                            give_io_buffer(got);
                        }
                        // Fall through: wait for readiness, then receive again.
                    }
                    Err(e) => {
                        if let Some(got) = got {
                            give_io_buffer(got);
                        }
                        return Poll::Ready(Err(e));
                    }
                    Ok(n) => {
                        let got = got.expect("a completed receive has its buffer");
                        let asked = got.len();
                        if n == 0 {
                            give_io_buffer(got);
                            return Poll::Ready(Ok(0));
                        }
                        self.rx_more = n == asked;
                        self.rx_backoff = false;
                        if n < asked && !reactor.has_recv_ring() {
                            // Start an early poll, so the next read knows at once
                            // whether more is there.
                            self.source_rx =
                                Some(reactor.poll_read_ready(self.stream.as_raw_fd()));
                        }
                        self.rx_stash = Some(Box::new((got, 0, n)));
                        return Poll::Ready(Ok(self.take_stash(buf).unwrap_or(0)));
                    }
                }
            }
            // Readiness known (the poll completed): receive now.
            Some((false, Some(_))) => {
                self.source_rx.take();
                return self.queue_recv(reactor, cx, buf.len());
            }
            // Something in flight: wait for it.
            Some((_, None)) => {
                if let Err(e) = self.read_timeout.check(reactor) {
                    // Dropping a receive cancels it; a poll carries nothing.
                    self.source_rx.take();
                    return Poll::Ready(Err(e));
                }
                let source = self.source_rx.as_ref().unwrap();
                source.add_waiter_single(cx.waker());
                self.read_timeout.maybe_set_timer(reactor, cx.waker());
                return Poll::Pending;
            }
            None if self.rx_more => {
                return self.queue_recv(reactor, cx, buf.len());
            }
            None => {}
        }

        poll_err!(self.read_timeout.check(reactor));
        self.source_rx = Some(reactor.poll_read_ready(self.stream.as_raw_fd()));
        let source = self.source_rx.as_ref().unwrap();
        source.add_waiter_single(cx.waker());
        self.read_timeout.maybe_set_timer(reactor, cx.waker());
        Poll::Pending
    }

    fn queue_recv(
        &mut self,
        reactor: &Reactor,
        cx: &Context<'_>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        self.rx_more = false;
        let into = take_io_buffer(want.min(IO_POOLED));
        let source = reactor.queued_recv(self.stream.as_raw_fd(), into);
        source.add_waiter_single(cx.waker());
        self.read_timeout.maybe_set_timer(reactor, cx.waker());
        self.source_rx = Some(source);
        Poll::Pending
    }

    /// Copies stashed bytes into `buf`; `None` when there are none.
    fn take_stash(&mut self, buf: &mut [u8]) -> Option<usize> {
        let stash = self.rx_stash.as_mut()?;
        let (store, start, end) = &mut **stash;
        let n = (*end - *start).min(buf.len());
        buf[..n].copy_from_slice(&store.as_bytes()[*start..*start + n]);
        *start += n;
        if *start == *end {
            let (store, _, _) = *self.rx_stash.take().unwrap();
            give_io_buffer(store);
        }
        Some(n)
    }

    /// ringway: whether nothing of this stream is between it and the kernel: no stashed
    /// received bytes, no receive and no send queued or in flight (a readiness poll is
    /// fine: it carries nothing). A stream must be quiet to have its fd moved elsewhere:
    /// received bytes would stay behind, and a send the reactor completed but no write
    /// has seen would be sent again by the retried write.
    pub(crate) fn io_quiet(&self) -> bool {
        let carries = |src: &Option<Source>| {
            src.as_ref()
                .map(|src| {
                    matches!(
                        &*src.source_type(),
                        SourceType::SockRecv(_) | SourceType::SockSend(_)
                    )
                })
                .unwrap_or(false)
        };
        // A ring receive that ended with every byte taken (the single first one, or a
        // multishot's last CQE) is in the kernel no more.
        let ms_done = |src: &Source| match &*src.source_type() {
            SourceType::SockRecvMulti(m) => m.chunks.is_empty() && m.end.is_some(),
            _ => false,
        };
        self.rx_stash.is_none()
            && self.rx_ms.as_ref().is_none_or(ms_done)
            && !carries(&self.source_rx)
            && !carries(&self.source_tx)
    }

    /// ringway: waits until the socket is readable (bytes, EOF or an error) without a
    /// buffer, under the read timeout. It arms the same one-shot poll `poll_read` arms
    /// before it receives, and leaves it completed, so the next `poll_read` receives at
    /// once. Holding no buffer while a connection idles is the point. Stashed bytes count
    /// as readable; so does a receive in flight from a dropped read, once it completes.
    pub(crate) fn poll_readable(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        if self.rx_stash.is_some() {
            return Poll::Ready(Ok(()));
        }
        let reactor = self.reactor.upgrade().unwrap();
        let reactor = reactor.as_ref();
        // ringway: with a multishot armed, readable once it has bytes or ended (a
        // back-off or cancel with nothing queued is not readable: look again below).
        if self.rx_ms.is_some() {
            let mut none = [0u8; 0];
            match self.ms_take(&mut none) {
                MsTake::Data(_) => {
                    self.read_timeout.cancel_timer(reactor);
                    return Poll::Ready(Ok(()));
                }
                MsTake::Ended(r) if r == -libc::ENOBUFS || r == -libc::ECANCELED || r > 0 => {
                    if r == -libc::ENOBUFS {
                        self.rx_backoff = true;
                    }
                    self.rx_ms = None;
                }
                MsTake::Ended(_) => {
                    self.read_timeout.cancel_timer(reactor);
                    return Poll::Ready(Ok(()));
                }
                MsTake::Pending => {
                    poll_err!(self.read_timeout.check(reactor));
                    let src = self.rx_ms.as_ref().unwrap();
                    src.add_waiter_single(cx.waker());
                    self.read_timeout.maybe_set_timer(reactor, cx.waker());
                    return Poll::Pending;
                }
            }
        }
        if self.source_rx.is_none() || self.rx_more {
            // Wait through a multishot: the bytes arrive with it, no poll then RECV.
            self.rx_more = false;
            if self.try_arm_ms(reactor, cx) {
                poll_err!(self.read_timeout.check(reactor));
                return Poll::Pending;
            }
        }
        self.rx_more = false;
        match self.source_rx.as_ref() {
            Some(src) if src.result().is_some() => {
                self.read_timeout.cancel_timer(reactor);
                return Poll::Ready(Ok(()));
            }
            Some(_) => {}
            None => {
                self.source_rx = Some(reactor.poll_read_ready(self.stream.as_raw_fd()));
            }
        }
        poll_err!(self.read_timeout.check(reactor));
        let source = self.source_rx.as_ref().unwrap();
        source.add_waiter_single(cx.waker());
        self.read_timeout.maybe_set_timer(reactor, cx.waker());
        Poll::Pending
    }

    /// ringway: writes of [`DIRECT_SEND_MIN`] bytes or more are one `send` system call
    /// from the caller's bytes (no copy, done at once); smaller writes go through the
    /// ring. The first poll copies up to
    /// [`SEND_MAX`] bytes into an owned buffer and queues a `SEND` for them without
    /// entering the kernel (the executor submits every queued operation once per loop
    /// turn, so many connections' sends share one `io_uring_enter`), and is pending; the
    /// poll after its completion returns what the kernel took, which may be less than
    /// asked (the caller writes the rest, as after any short write). Nothing is in
    /// flight once a write has returned, so a stream can be detached or dropped between
    /// writes as before. A write dropped while its send is in flight leaves the send to
    /// finish or be cancelled by the reactor (the source owns its buffer, so the kernel
    /// never writes from freed memory); the next write then checks that the bytes that
    /// went out are the ones it is writing, and fails the stream otherwise.
    pub(crate) fn poll_write(&mut self, cx: &Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let reactor = self.reactor.upgrade().unwrap();
        let reactor = reactor.as_ref();

        let in_flight = self
            .source_tx
            .as_ref()
            .map(|src| matches!(&*src.source_type(), SourceType::SockSend(_)));
        match in_flight {
            Some(true) => {
                let result = self.source_tx.as_ref().and_then(|src| src.result());
                match result {
                    None => {
                        if let Err(e) = self.write_timeout.check(reactor) {
                            // Dropping the source cancels the send.
                            self.source_tx.take();
                            return Poll::Ready(Err(e));
                        }
                        let source = self.source_tx.as_ref().unwrap();
                        source.add_waiter_single(cx.waker());
                        self.write_timeout.maybe_set_timer(reactor, cx.waker());
                        return Poll::Pending;
                    }
                    Some(result) => {
                        self.write_timeout.cancel_timer(reactor);
                        let source = self.source_tx.take().unwrap();
                        let sent = match source.extract_source_type() {
                            SourceType::SockSend(sent) => sent,
                            _ => unreachable!(),
                        };
                        let n = match result {
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                // The socket refused without waiting: wait until it
                                // is writable, then send again.
                                give_io_buffer(sent);
                                self.source_tx =
                                    Some(reactor.poll_write_ready(self.stream.as_raw_fd()));
                                let source = self.source_tx.as_ref().unwrap();
                                source.add_waiter_single(cx.waker());
                                self.write_timeout.maybe_set_timer(reactor, cx.waker());
                                return Poll::Pending;
                            }
                            Err(e) => {
                                give_io_buffer(sent);
                                return Poll::Ready(Err(e));
                            }
                        };
                        let same = n <= buf.len() && sent.as_bytes()[..n] == buf[..n];
                        give_io_buffer(sent);
                        if !same {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::BrokenPipe,
                                "a write was dropped while its send was in flight, and the \
                                 next write carries other bytes",
                            )));
                        }
                        return Poll::Ready(Ok(n));
                    }
                }
            }
            // Waiting for the socket to be writable after a refused send.
            Some(false) => {
                let ready = self.source_tx.as_ref().and_then(|src| src.result()).is_some();
                if !ready {
                    if let Err(e) = self.write_timeout.check(reactor) {
                        self.source_tx.take();
                        return Poll::Ready(Err(e));
                    }
                    let source = self.source_tx.as_ref().unwrap();
                    source.add_waiter_single(cx.waker());
                    self.write_timeout.maybe_set_timer(reactor, cx.waker());
                    return Poll::Pending;
                }
                self.source_tx.take();
            }
            None => {}
        }

        if buf.len() >= DIRECT_SEND_MIN {
            // A large write: one `send` straight from the caller's bytes beats copying
            // them into an owned buffer and waiting a loop turn for the completion (the
            // copy and the extra turn cost 16 KiB responses ~29% more CPU than the plain
            // system call; see RINGWAY-PATCHES.md). Nothing is in flight afterwards.
            match super::yolo_send(self.stream.as_raw_fd(), buf) {
                Some(res) => {
                    // ringway: the write is done, also when it waited for writability
                    // first (its deadline must not carry over to the next write).
                    self.write_timeout.cancel_timer(reactor);
                    return Poll::Ready(res);
                }
                None => {
                    poll_err!(self.write_timeout.check(reactor));
                    self.source_tx = Some(reactor.poll_write_ready(self.stream.as_raw_fd()));
                    let source = self.source_tx.as_ref().unwrap();
                    source.add_waiter_single(cx.waker());
                    self.write_timeout.maybe_set_timer(reactor, cx.waker());
                    return Poll::Pending;
                }
            }
        }

        let len = buf.len().min(SEND_MAX);
        let mut owned = take_io_buffer(len);
        owned.as_bytes_mut().copy_from_slice(&buf[..len]);
        let source = reactor.queued_send(self.stream.as_raw_fd(), owned);
        source.add_waiter_single(cx.waker());
        self.write_timeout.maybe_set_timer(reactor, cx.waker());
        self.source_tx = Some(source);
        Poll::Pending
    }

    pub(crate) fn poll_close(&mut self, _: &Context<'_>) -> Poll<io::Result<()>> {
        self.source_tx.take();
        Poll::Ready(sys::shutdown(self.stream.as_raw_fd(), Shutdown::Write))
    }

    /// io_uring has support for shutdown now, but it is not in any released
    /// kernel. Even with my "let's use latest" policy it would be crazy to
    /// mandate a kernel that doesn't even exist. So in preparation for that
    /// we'll sync-emulate this but already on an async wrapper
    pub(crate) fn poll_shutdown(
        &self,
        _cx: &mut Context<'_>,
        how: Shutdown,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(sys::shutdown(self.stream.as_raw_fd(), how))
    }
}

#[derive(Debug)]
pub(crate) struct GlommioStream<S, B> {
    stream: NonBufferedStream<S>,
    rx_buf: B,
    rx_done: Cell<bool>,
}

impl<S> From<socket2::Socket> for GlommioStream<S, NonBuffered>
where
    S: AsRawFd + From<socket2::Socket> + Unpin,
{
    fn from(socket: socket2::Socket) -> Self {
        let reactor = crate::executor().reactor();
        let mut stream = NonBufferedStream {
            reactor: Rc::downgrade(&reactor),
            stream: socket.into(),
            source_tx: None,
            source_rx: None,
            write_timeout: Timeout::new(reactor.register_timer()),
            read_timeout: Timeout::new(reactor.register_timer()),
            rx_stash: None,
            rx_more: false,
            rx_ms: None,
            rx_backoff: false,
            rx_ring_used: false,
            rx_single: false,
        };
        stream.init();
        GlommioStream {
            stream,
            rx_buf: NonBuffered,
            rx_done: Cell::new(false),
        }
    }
}

impl<S: AsRawFd> AsRawFd for GlommioStream<S, NonBuffered> {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.stream.as_raw_fd()
    }
}

impl<S> FromRawFd for GlommioStream<S, NonBuffered>
where
    S: AsRawFd + FromRawFd + From<socket2::Socket> + Unpin,
{
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        let socket = socket2::Socket::from_raw_fd(fd);
        GlommioStream::from(socket)
    }
}

impl<S> GlommioStream<S, NonBuffered> {
    pub(crate) fn buffered_with<B: Buffered>(self, rx_buf: B) -> GlommioStream<S, B> {
        GlommioStream {
            stream: self.stream,
            rx_buf,
            rx_done: self.rx_done,
        }
    }
}

impl<S: AsRawFd, B: RxBuf> GlommioStream<S, B> {
    /// Receives data on the socket from the remote address to which it is
    /// connected, without removing that data from the queue.
    ///
    /// On success, returns the number of bytes peeked.
    /// Successive calls return the same data. This is accomplished by passing
    /// `MSG_PEEK` as a flag to the underlying `recv` system call.
    pub(crate) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pos = self.rx_buf.peek(buf);
        if pos < buf.len() && !self.rx_done.get() {
            if let Some(result) = self.stream.try_peek(&mut buf[pos..]) {
                match result {
                    Err(e) => return Err(e),
                    Ok(len) => {
                        pos += len;
                        if len == 0 {
                            self.rx_done.set(true);
                        }
                    }
                }
            }
        }
        if pos > 0 || self.rx_done.get() {
            return Ok(pos);
        }
        self.stream.peek(buf).await
    }

    pub(crate) fn poll_read(
        &mut self,
        cx: &Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.rx_buf.is_empty() {
            if buf.len() >= self.rx_buf.buffer_size() {
                return self.stream.poll_read(cx, buf);
            }
            if !self.rx_done.get() {
                poll_err!(ready!(self.poll_replenish_buffer(cx)));
            }
        }
        Poll::Ready(Ok(self.rx_buf.read(buf)))
    }

    fn poll_replenish_buffer(&mut self, cx: &Context<'_>) -> Poll<io::Result<usize>> {
        let result = poll_err!(ready!(self.stream.poll_read(cx, self.rx_buf.unfilled())));
        self.rx_buf.handle_result(result);
        if result == 0 {
            self.rx_done.set(true);
        }
        Poll::Ready(Ok(result))
    }

    /// ringway: see [`NonBufferedStream::poll_readable`]; bytes already in the receive
    /// buffer count as readable.
    pub(crate) fn poll_readable(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        if !self.rx_buf.is_empty() || self.rx_done.get() {
            return Poll::Ready(Ok(()));
        }
        self.stream.poll_readable(cx)
    }

    pub(crate) fn poll_write(&mut self, cx: &Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.stream.poll_write(cx, buf)
    }

    /// ringway: see [`NonBufferedStream::io_quiet`]; bytes in the receive buffer count.
    pub(crate) fn io_quiet(&self) -> bool {
        self.rx_buf.is_empty() && self.stream.io_quiet()
    }

    /// ringway: see [`NonBufferedStream::quiesce`].
    pub(crate) fn quiesce(&mut self) -> bool {
        self.stream.quiesce()
    }

    /// ringway: see [`NonBufferedStream::stop_receives`]; bytes in the receive buffer
    /// are read first (`try_read_buffered`).
    pub(crate) fn stop_receives(&mut self) -> bool {
        self.stream.stop_receives()
    }

    /// ringway: see [`NonBufferedStream::set_recv_multishot`].
    pub(crate) fn set_recv_multishot(&mut self, on: bool) {
        self.stream.set_recv_multishot(on)
    }

    /// ringway: see [`NonBufferedStream::poll_socket_readable`].
    pub(crate) fn poll_socket_readable(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_socket_readable(cx)
    }

    /// ringway: see [`NonBufferedStream::poll_socket_writable`].
    pub(crate) fn poll_socket_writable(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_socket_writable(cx)
    }

    /// ringway: see [`NonBufferedStream::rx_buffered`]; bytes in the receive buffer count.
    pub(crate) fn rx_buffered(&self) -> Option<bool> {
        if !self.rx_buf.is_empty() {
            return Some(true);
        }
        self.stream.rx_buffered()
    }

    /// ringway: see [`NonBufferedStream::send_buffered`]; bytes in the receive buffer
    /// come first, so none are sent from the ring while it holds some.
    pub(crate) fn send_buffered(&mut self, fd: RawFd, max: usize) -> Option<io::Result<usize>> {
        if !self.rx_buf.is_empty() {
            return None;
        }
        self.stream.send_buffered(fd, max)
    }

    /// ringway: see [`NonBufferedStream::try_read_buffered`].
    pub(crate) fn try_read_buffered(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        if !self.rx_buf.is_empty() {
            return Some(Ok(self.rx_buf.read(buf)));
        }
        self.stream.try_read_buffered(buf)
    }

    pub(crate) fn poll_flush(&self, _cx: &Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    pub(crate) fn poll_close(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_close(cx)
    }

    pub(crate) fn poll_shutdown(
        &self,
        cx: &mut Context<'_>,
        how: Shutdown,
    ) -> Poll<io::Result<()>> {
        self.stream.poll_shutdown(cx, how)
    }

    pub(crate) fn set_write_timeout(&self, dur: Option<Duration>) -> Result<()> {
        self.stream.write_timeout.set(dur)
    }

    pub(crate) fn set_read_timeout(&self, dur: Option<Duration>) -> Result<()> {
        self.stream.read_timeout.set(dur)
    }

    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.stream.write_timeout.get()
    }

    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        self.stream.read_timeout.get()
    }

    pub(crate) fn stream(&self) -> &S {
        &self.stream.stream
    }
}

impl<S: AsRawFd, B: Buffered> GlommioStream<S, B> {
    pub(crate) fn poll_fill_buf(&mut self, cx: &Context<'_>) -> Poll<io::Result<&[u8]>> {
        if self.rx_buf.is_empty() {
            poll_err!(ready!(self.poll_replenish_buffer(cx)));
        }
        Poll::Ready(Ok(self.rx_buf.as_bytes()))
    }

    pub(crate) fn consume(&mut self, amt: usize) {
        self.rx_buf.consume(amt);
    }
}
