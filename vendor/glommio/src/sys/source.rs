// Unless explicitly stated otherwise all files in this repository are licensed
// under the MIT/Apache-2.0 License, at your convenience
//
// This product includes software developed at Datadog (https://www.datadoghq.com/). Copyright 2021 Datadog, Inc.
//
use crate::{
    iou::sqe::SockAddrStorage,
    sys::{
        DmaBuffer, IoBuffer, OsResult, PollableStatus, ReactorQueue, SourceId, Statx, TimeSpec64,
        Wakers,
    },
    GlommioError, IoRequirements, ReactorErrorKind, RingIoStats, TaskQueueHandle,
};
use futures_lite::{future, io};
use std::{
    cell::{Ref, RefCell, RefMut},
    convert::TryFrom,
    ffi::CString,
    fmt,
    mem::{ManuallyDrop, MaybeUninit},
    os::unix::io::RawFd,
    path::PathBuf,
    pin::Pin,
    rc::Rc,
    task::{Poll, Waker},
    time::Duration,
};

#[derive(Debug)]
#[allow(dead_code)] // Clippy is unhappy with some of the fields on these enums never being read,
                    // but they are certainly used, and read by debug
pub(crate) enum SourceType {
    Write(PollableStatus, IoBuffer),
    Read(PollableStatus, Option<IoBuffer>),
    PollAdd,
    SockSend(DmaBuffer),
    SockRecv(Option<DmaBuffer>),
    /// ringway: a multishot `RECV` into the executor's provided-buffer ring; its CQEs
    /// queue here while they carry `IORING_CQE_F_MORE` (see `sys/buf_ring.rs`).
    SockRecvMulti(crate::sys::buf_ring::MultiRecv),
    // ringway: the message headers and socket addresses of these four are boxed, so
    // every source (most are `PollAdd`) is not as large as the largest (about 270 bytes
    // smaller each; see RINGWAY-PATCHES.md). The boxes also keep the addresses the
    // kernel is given stable.
    SockRecvMsg(
        Option<DmaBuffer>,
        Box<(
            libc::iovec,
            libc::msghdr,
            MaybeUninit<nix::sys::socket::sockaddr_storage>,
        )>,
    ),
    SockSendMsg(
        DmaBuffer,
        Box<(libc::iovec, libc::msghdr, nix::sys::socket::SockaddrStorage)>,
    ),
    Open(CString),
    FdataSync,
    Fallocate,
    Truncate,
    Close,
    LinkRings,
    ForeignNotifier(u64, bool),
    Statx(CString, Box<RefCell<Statx>>),
    Timeout(TimeSpec64, u32),
    Connect(Box<nix::sys::socket::SockaddrStorage>),
    Accept(Box<SockAddrStorage>),
    Rename(PathBuf, PathBuf),
    CreateDir(PathBuf),
    Remove(PathBuf),
    BlockingFn,
    Invalid,
    CopyFileRange(RawFd, u64, usize),
    #[cfg(feature = "bench")]
    Noop,
}

impl TryFrom<SourceType> for Statx {
    type Error = GlommioError<()>;

    fn try_from(value: SourceType) -> Result<Self, Self::Error> {
        match value {
            SourceType::Statx(_, buf) => Ok(buf.into_inner()),
            src => Err(GlommioError::ReactorError(
                ReactorErrorKind::IncorrectSourceType(format!("{src:?}")),
            )),
        }
    }
}

#[derive(PartialEq, Clone, Copy)]
pub(crate) enum EnqueuedStatus {
    Enqueued,
    Canceled,
    Dispatched,
}

#[derive(Clone)]
pub struct EnqueuedSource {
    pub(crate) id: SourceId,
    pub(crate) queue: ReactorQueue,
    pub(crate) status: EnqueuedStatus,
}

pub(crate) type StatsCollectionFn = fn(&io::Result<usize>, &mut RingIoStats, waiters: u64) -> ();
pub(crate) type LatencyCollectionFn =
    fn(std::time::Duration, std::time::Duration, std::time::Duration, &mut RingIoStats) -> ();

#[derive(Copy, Clone)]
pub(crate) struct StatsCollection {
    /// fulfilled runs when the source exits the reactor
    pub(crate) fulfilled: Option<StatsCollectionFn>,

    /// reused runs when a fulfilled source is reused by another consumer
    pub(crate) reused: Option<StatsCollectionFn>,

    /// Called when a result is first consumed. It collects the time
    /// it took for user code to consume the result of a fulfilled source.
    /// This is called once, even if the source is reused multiple time.
    pub(crate) latency: Option<LatencyCollectionFn>,
}

/// A registered source of I/O events.
pub(crate) struct InnerSource {
    /// Raw file descriptor on Unix platforms.
    pub(crate) raw: RawFd,

    /// Tasks interested in events on this source.
    pub(crate) wakers: Wakers,

    pub(crate) source_type: SourceType,

    pub(crate) io_requirements: IoRequirements,

    pub(crate) timeout: Option<TimeSpec64>,

    pub(crate) enqueued: Option<EnqueuedSource>,

    pub(crate) stats_collection: Option<StatsCollection>,

    pub(crate) task_queue: Option<TaskQueueHandle>,
}

impl InnerSource {
    /// ringway: whether anything reads this source's queued/submitted/fulfilled
    /// timestamps (a latency collection function: file I/O with
    /// `record_io_latencies`); sockets have none, so their operations skip the three
    /// clock reads (queued, submitted, fulfilled) nobody would look at.
    pub(crate) fn wants_latency(&self) -> bool {
        matches!(self.stats_collection, Some(StatsCollection { latency: Some(_), .. }))
    }

    pub(crate) fn update_source_type(&mut self, source_type: SourceType) -> SourceType {
        std::mem::replace(&mut self.source_type, source_type)
    }
}

impl fmt::Debug for InnerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InnerSource")
            .field("raw", &self.raw)
            .field("wakers", &self.wakers)
            .field("source_type", &self.source_type)
            .field("io_requirements", &self.io_requirements)
            .finish()
    }
}

#[derive(Debug)]
pub struct Source {
    /// ringway: `ManuallyDrop` so that dropping a source can shelve its allocation for
    /// the next one (see [`SPARE_SOURCES`]).
    pub(crate) inner: ManuallyDrop<Pin<Rc<RefCell<InnerSource>>>>,
}

/// ringway: most spare source allocations a thread keeps.
///
/// Every ring operation has a source, made when it is queued and dropped when its
/// result is taken: two sends per proxied HTTP/1.1 request, and the polls, receives and
/// connects around them. With dozens of connections in flight, more of them are freed in a
/// row than glibc's per-thread cache holds (7 per size), so each took `malloc`'s and
/// `free`'s slow paths (about 210 instructions a source, measured with callgrind). A
/// source whose allocation nobody else holds (it is not in the reactor's source map, so
/// the kernel is done with it) is emptied when dropped (its buffer, wakers and queue
/// handle go as before) and shelved, and [`Source::new`] takes a shelved one first.
/// A thread keeps at most this many (about 60 KiB); the rest are freed as usual.
pub const SPARE_SOURCES: usize = 256;

thread_local! {
    static SPARE: RefCell<Vec<Rc<RefCell<InnerSource>>>> = const { RefCell::new(Vec::new()) };
}

/// ringway: how many spare source allocations this thread holds (for tests).
pub fn spare_sources() -> usize {
    SPARE.try_with(|s| s.borrow().len()).unwrap_or(0)
}

impl Source {
    /// Registers an I/O source in the reactor.
    pub(crate) fn new(
        ioreq: IoRequirements,
        raw: RawFd,
        source_type: SourceType,
        stats_collection: Option<StatsCollection>,
        task_queue: Option<TaskQueueHandle>,
    ) -> Source {
        let spare = SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten();
        let inner = match spare {
            Some(spare) => {
                // Emptied when shelved (`shelve`): its wakers, queue entry and timeout
                // are as a new source's; the fields written here held nothing.
                {
                    let mut inner = spare.borrow_mut();
                    inner.raw = raw;
                    inner.source_type = source_type;
                    inner.io_requirements = ioreq;
                    inner.stats_collection = stats_collection;
                    inner.task_queue = task_queue;
                }
                Pin::new(spare)
            }
            None => Rc::pin(RefCell::new(InnerSource {
                raw,
                wakers: Wakers::new(),
                source_type,
                io_requirements: ioreq,
                enqueued: None,
                timeout: None,
                stats_collection,
                task_queue,
            })),
        };
        Source {
            inner: ManuallyDrop::new(inner),
        }
    }

    pub(crate) fn set_timeout(&self, d: Duration) -> Option<Duration> {
        let mut inner = self.inner.borrow_mut();
        let t = &mut inner.timeout;
        let old = *t;
        match TimeSpec64::try_from(d) {
            Ok(dur) | Err(dur) => *t = Some(dur),
        }
        old.map(Duration::from)
    }

    pub(super) fn timeout_ref(&self) -> Ref<'_, Option<TimeSpec64>> {
        Ref::map(self.inner.borrow(), |x| &x.timeout)
    }

    pub(crate) fn source_type(&self) -> Ref<'_, SourceType> {
        Ref::map(self.inner.borrow(), |x| &x.source_type)
    }

    pub(crate) fn source_type_mut(&self) -> RefMut<'_, SourceType> {
        RefMut::map(self.inner.borrow_mut(), |x| &mut x.source_type)
    }

    pub(crate) fn extract_source_type(self) -> SourceType {
        self.inner
            .borrow_mut()
            .update_source_type(SourceType::Invalid)
    }

    pub(crate) fn extract_buffer(self) -> IoBuffer {
        let stype = self.extract_source_type();
        match stype {
            SourceType::Read(_, Some(buffer)) => buffer,
            SourceType::Write(_, buffer) => buffer,
            x => panic!("Could not extract buffer. Source: {:?}", x),
        }
    }

    pub(crate) fn buffer(&self) -> Ref<'_, IoBuffer> {
        Ref::map(self.source_type(), |stype| match stype {
            SourceType::Read(_, Some(buffer)) => buffer,
            SourceType::Write(_, buffer) => buffer,
            x => panic!("Could not extract buffer. Source: {:?}", x),
        })
    }

    pub(crate) fn result(&self) -> Option<io::Result<usize>> {
        let mut inner = self.inner.borrow_mut();
        let ret = inner
            .wakers
            .result
            .as_ref()
            .map(|x| OsResult::from(x).into());
        if ret.is_none() {
            return ret;
        }

        // if there is a scheduler latency collection function present, invoke it once
        if let Some(Some(stat_fn)) = inner.stats_collection.as_ref().map(|x| x.latency) {
            if let Some(lat) = inner.wakers.timestamps() {
                drop(inner);
                let pre_lat = lat.submitted_at - lat.queued_at;
                let io_lat = lat.fulfilled_at - lat.submitted_at;
                let post_lat = lat.fulfilled_at.elapsed();

                let reactor = &crate::executor().reactor().sys;
                (stat_fn)(
                    pre_lat,
                    io_lat,
                    post_lat,
                    reactor.ring_for_source(self).io_stats_mut(),
                );
                (stat_fn)(
                    pre_lat,
                    io_lat,
                    post_lat,
                    reactor
                        .ring_for_source(self)
                        .io_stats_for_task_queue_mut(crate::executor().current_task_queue()),
                );
            }
        }

        ret
    }

    // adds a single waiter to the list, replacing any waiter that may already
    // exist. Should be used for single streams that map a future 1:1 to their I/O
    // source
    pub(crate) fn add_waiter_single(&self, waker: &Waker) {
        let mut inner = self.inner.borrow_mut();
        let waiters = &mut inner.wakers.waiters;
        match waiters.first_mut() {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
            }
            None => waiters.push(waker.clone()),
        }
        debug_assert_eq!(inner.wakers.waiters.len(), 1)
    }

    // adds a waiter to the list. Useful for streams that have many futures waiting
    // on a single I/O source
    //
    // ringway: a waker that wakes a task already waiting here is not added again. A
    // task that polls the same pending operation many times (an accept loop `or`-ed
    // with a periodic timer, woken every 20 ms) otherwise piled up one waker clone per
    // poll, until the task's i16 reference count overflowed (a panic after ~11 idle
    // minutes in the h2c origin). See RINGWAY-PATCHES.md.
    pub(crate) fn add_waiter_many(&self, waker: &Waker) {
        let mut inner = self.inner.borrow_mut();
        let waiters = &mut inner.wakers.waiters;
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }

    pub(super) fn is_installed(&self) -> Option<bool> {
        match &self.inner.borrow().source_type {
            SourceType::ForeignNotifier(_, installed) => Some(*installed),
            _ => None,
        }
    }

    pub(super) fn raw(&self) -> RawFd {
        self.inner.borrow().raw
    }

    pub(crate) fn stats_collection(&self) -> Option<StatsCollection> {
        self.inner.borrow().stats_collection
    }

    pub(crate) async fn collect_rw(&self) -> io::Result<usize> {
        future::poll_fn(|cx| {
            if let Some(result) = self.result() {
                return Poll::Ready(result);
            }

            self.add_waiter_many(cx.waker());
            Poll::Pending
        })
        .await
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        if let Some(EnqueuedSource { id, queue, status }) = inner.enqueued.as_mut() {
            match status {
                EnqueuedStatus::Enqueued => {
                    // We never submitted the request, so it's safe to consume
                    // source here -- kernel didn't see our buffers. By consuming
                    // the source we are signaling to the submit method that we are
                    // no longer interested in submitting this. This should be cheaper
                    // than removing elements from the vector all the time.

                    *status = EnqueuedStatus::Canceled;
                }
                EnqueuedStatus::Dispatched => {
                    // ringway: a multishot receive keeps completing until its cancel
                    // lands: give what it queued back to the ring now, and what still
                    // comes as it comes (`orphan`).
                    if let SourceType::SockRecvMulti(m) = &mut inner.source_type {
                        m.orphan = true;
                        m.chunks.clear();
                    }
                    // We are cancelling this request, but it is already submitted.
                    // This means that the kernel might be using the buffers right
                    // now, so we delay `consume_source` until we consume the
                    // corresponding event from the completion queue.

                    queue.borrow_mut().cancel_request(*id);
                    *status = EnqueuedStatus::Canceled; // not necessary, but useful for correctness
                }
                EnqueuedStatus::Canceled => unreachable!(),
            }
        }
        drop(guard);
        // SAFETY: `inner` is not used after this, and this is its only drop.
        let rc = Pin::into_inner(unsafe { ManuallyDrop::take(&mut self.inner) });
        shelve(rc);
    }
}

/// ringway: keeps `rc` for the next source if nothing else holds it (the reactor's
/// source map holds a source from its queueing until its completion, or its
/// cancellation's, is consumed) and the thread has room; frees it otherwise.
fn shelve(rc: Rc<RefCell<InnerSource>>) {
    if Rc::strong_count(&rc) != 1 || Rc::weak_count(&rc) != 0 {
        return;
    }
    // Empty it before it is shelved: what it owned (a buffer, wakers, the queue handle)
    // goes now, as it would have with the allocation. Nothing else can reach `rc`, so
    // a drop here that drops other sources (a waker holding the last reference to a
    // task) finds neither this borrow nor the shelf's taken.
    {
        let mut inner = rc.borrow_mut();
        inner.source_type = SourceType::Invalid;
        inner.wakers.reset();
        inner.enqueued = None;
        inner.timeout = None;
    }
    let _ = SPARE.try_with(|s| {
        if let Ok(mut spare) = s.try_borrow_mut() {
            if spare.len() < SPARE_SOURCES {
                spare.push(rc);
            }
        }
    });
}
