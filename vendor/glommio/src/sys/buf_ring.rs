// ringway: a provided-buffer ring (IORING_REGISTER_PBUF_RING) for multishot receives.
// See RINGWAY-PATCHES.md.
//
// One per executor, registered on the main ring. The kernel takes a buffer from it only
// when bytes arrive for an armed multishot `RECV`, so an idle connection holds none. A
// buffer the kernel filled comes back to us in a CQE (`IORING_CQE_F_BUFFER`, id in the
// upper 16 bits of the flags) and is owned by a [`RingChunk`] until a read has copied
// it out; dropping the chunk gives the buffer back to the kernel. The memory is owned by
// an `Rc` shared with every chunk, so a chunk outliving its stream (or the reactor)
// still points at live memory; the reactor unregisters the ring before its io_uring is
// closed, and the memory is freed only once it is unregistered.
use crate::uring_sys;
use std::{
    alloc::{alloc, alloc_zeroed, dealloc, Layout},
    cell::Cell,
    fmt, io,
    os::unix::io::RawFd,
    rc::Rc,
    sync::atomic::{AtomicU16, Ordering},
};

/// The buffer group id ringway's ring is registered under.
pub(crate) const RECV_BGID: u16 = 0x5257;

/// Size of a receive buffer ring: `entries` buffers (a power of two, at most 32768) of
/// `buf_size` bytes each. Allocated once per executor; pages are touched only when the
/// kernel writes into a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvBufferRing {
    /// How many buffers (a power of two, 1 to 32768).
    pub entries: u16,
    /// Bytes per buffer.
    pub buf_size: u32,
}

impl RecvBufferRing {
    /// ringway's default: 256 buffers of 16 KiB (4 MiB of address space per shard).
    pub const DEFAULT: RecvBufferRing = RecvBufferRing {
        entries: 256,
        buf_size: 16 * 1024,
    };

    /// The default for a new executor, from the environment variable
    /// `GLOMMIO_RECV_BUFFER_RING`: unset or `on`: [`RecvBufferRing::DEFAULT`]; `off` or
    /// `0`: none (reads poll, then `RECV`); `ENTRIES:BYTES`: that size (anything else:
    /// none). On by default (see RINGWAY-PATCHES.md).
    pub fn from_env() -> Option<RecvBufferRing> {
        match std::env::var("GLOMMIO_RECV_BUFFER_RING") {
            Err(_) => Some(Self::DEFAULT),
            Ok(v) if v == "off" || v == "0" => None,
            Ok(v) if v == "on" => Some(Self::DEFAULT),
            Ok(v) => {
                let (e, s) = v.split_once(':')?;
                let entries: u16 = e.trim().parse().ok()?;
                let buf_size: u32 = s.trim().parse().ok()?;
                (entries.is_power_of_two() && entries <= 32768 && buf_size > 0)
                    .then_some(RecvBufferRing { entries, buf_size })
            }
        }
    }
}

pub(crate) struct BufRing {
    ring: *mut uring_sys::io_uring_buf,
    ring_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    entries: u16,
    buf_size: u32,
    /// Our copy of the tail (the kernel reads the published one).
    tail: Cell<u16>,
    /// Buffers the kernel filled and handed us that are not back in the ring yet.
    out: Cell<u32>,
    /// Multishot receives that ended because the ring was empty (`ENOBUFS`).
    exhausted: Cell<u64>,
    /// Multishot receives armed.
    armed: Cell<u64>,
    /// Single receives armed (a stream's first).
    single: Cell<u64>,
    /// Registered with an io_uring that may still use it: the memory must not be freed.
    registered: Cell<bool>,
    ring_fd: RawFd,
}

impl fmt::Debug for BufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufRing")
            .field("entries", &self.entries)
            .field("buf_size", &self.buf_size)
            .field("out", &self.out.get())
            .finish()
    }
}

impl BufRing {
    /// Allocates the ring and its buffers and registers them with the io_uring `ring_fd`.
    pub(crate) fn new(ring_fd: RawFd, cfg: RecvBufferRing) -> io::Result<Rc<BufRing>> {
        let entries = cfg.entries;
        if !entries.is_power_of_two() || entries > 32768 || cfg.buf_size == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let ring_layout = Layout::from_size_align(
            entries as usize * std::mem::size_of::<uring_sys::io_uring_buf>(),
            4096,
        )
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let bufs_layout =
            Layout::from_size_align(entries as usize * cfg.buf_size as usize, 4096)
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: both layouts have a non-zero size.
        let ring = unsafe { alloc_zeroed(ring_layout) } as *mut uring_sys::io_uring_buf;
        // Not zeroed: the pages stay untouched until the kernel writes into a buffer.
        let bufs = unsafe { alloc(bufs_layout) };
        if ring.is_null() || bufs.is_null() {
            unsafe {
                if !ring.is_null() {
                    dealloc(ring as *mut u8, ring_layout);
                }
                if !bufs.is_null() {
                    dealloc(bufs, bufs_layout);
                }
            }
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        let me = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            buf_size: cfg.buf_size,
            tail: Cell::new(0),
            out: Cell::new(0),
            exhausted: Cell::new(0),
            armed: Cell::new(0),
            single: Cell::new(0),
            registered: Cell::new(false),
            ring_fd,
        };
        for bid in 0..entries {
            me.push(bid);
        }
        me.publish();
        let reg = uring_sys::io_uring_buf_reg {
            ring_addr: ring as u64,
            ring_entries: entries as u32,
            bgid: RECV_BGID,
            flags: 0,
            resv: [0; 3],
        };
        // SAFETY: `reg` is a valid argument for this opcode; the ring memory is
        // page-aligned and lives until `unregister` (or for ever, see Drop).
        let r = unsafe {
            uring_sys::syscalls::io_uring_register(
                ring_fd,
                uring_sys::IORING_REGISTER_PBUF_RING,
                &reg as *const _ as *const libc::c_void,
                1,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        me.registered.set(true);
        Ok(Rc::new(me))
    }

    /// Puts buffer `bid` at the tail (not yet visible to the kernel).
    fn push(&self, bid: u16) {
        let t = self.tail.get();
        let slot = (t & (self.entries - 1)) as usize;
        // SAFETY: `slot` < entries. Only `addr`, `len` and `bid` are written: `resv` of
        // entry 0 is the ring's tail, which the kernel reads.
        unsafe {
            let e = self.ring.add(slot);
            (*e).addr = self.bufs.add(bid as usize * self.buf_size as usize) as u64;
            (*e).len = self.buf_size;
            (*e).bid = bid;
        }
        self.tail.set(t.wrapping_add(1));
    }

    /// Makes the pushed entries visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is the u16 at offset 14 of entry 0, 2-byte aligned.
        unsafe {
            let tail = (self.ring as *mut u8).add(14) as *const AtomicU16;
            (*tail).store(self.tail.get(), Ordering::Release);
        }
    }

    /// A buffer the kernel filled came back to us in a CQE.
    pub(crate) fn taken(&self) {
        self.out.set(self.out.get() + 1);
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn recycle(&self, bid: u16) {
        self.push(bid);
        self.publish();
        self.out.set(self.out.get().saturating_sub(1));
    }

    pub(crate) fn count_armed(&self, multishot: bool) {
        let c = if multishot { &self.armed } else { &self.single };
        c.set(c.get() + 1);
    }

    pub(crate) fn count_exhausted(&self) {
        self.exhausted.set(self.exhausted.get() + 1);
    }

    pub(crate) fn bytes(&self, bid: u16, len: u32) -> &[u8] {
        let len = len.min(self.buf_size) as usize;
        let bid = (bid % self.entries) as usize;
        // SAFETY: inside the allocation; the kernel wrote `len` bytes there and does not
        // touch the buffer again until we recycle it.
        unsafe { std::slice::from_raw_parts(self.bufs.add(bid * self.buf_size as usize), len) }
    }

    pub(crate) fn stats(&self) -> RecvBufferRingStats {
        RecvBufferRingStats {
            entries: self.entries as u32,
            buf_size: self.buf_size,
            free: self.entries as u32 - self.out.get().min(self.entries as u32),
            exhausted: self.exhausted.get(),
            armed: self.armed.get(),
            single: self.single.get(),
        }
    }

    /// Free buffers (from our side: the kernel may hold some it has not reported yet).
    pub(crate) fn free(&self) -> u32 {
        self.entries as u32 - self.out.get().min(self.entries as u32)
    }

    pub(crate) fn entries(&self) -> u32 {
        self.entries as u32
    }

    /// Unregisters the ring from its io_uring (called while that io_uring is still open).
    pub(crate) fn unregister(&self) {
        if !self.registered.get() {
            return;
        }
        let reg = uring_sys::io_uring_buf_reg {
            ring_addr: 0,
            ring_entries: 0,
            bgid: RECV_BGID,
            flags: 0,
            resv: [0; 3],
        };
        // SAFETY: a valid argument for this opcode.
        let r = unsafe {
            uring_sys::syscalls::io_uring_register(
                self.ring_fd,
                uring_sys::IORING_UNREGISTER_PBUF_RING,
                &reg as *const _ as *const libc::c_void,
                1,
            )
        };
        if r == 0 {
            self.registered.set(false);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered.get() {
            // Still known to a kernel ring: leak rather than let it write into memory
            // the allocator hands out again.
            return;
        }
        // SAFETY: allocated in `new` with these layouts, and no longer registered.
        unsafe {
            dealloc(self.ring as *mut u8, self.ring_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}

/// Figures of an executor's receive buffer ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecvBufferRingStats {
    /// Buffers in the ring.
    pub entries: u32,
    /// Bytes per buffer.
    pub buf_size: u32,
    /// Buffers not held by received bytes waiting for a read.
    pub free: u32,
    /// Multishot receives ended because the ring had no buffer (`ENOBUFS`); each fell
    /// back to the poll + `RECV` path, nothing lost.
    pub exhausted: u64,
    /// Multishot receives armed (one serves many reads).
    pub armed: u64,
    /// Single receives from the ring armed: a stream's first receive is one, so that a
    /// connection closed after one exchange has nothing armed to cancel.
    pub single: u64,
}

/// Bytes a multishot receive brought, in one buffer of the ring, until a read copied
/// them all out; dropping it gives the buffer back to the kernel.
pub(crate) struct RingChunk {
    pub(crate) ring: Rc<BufRing>,
    pub(crate) bid: u16,
    pub(crate) len: u32,
    pub(crate) off: u32,
}

impl RingChunk {
    pub(crate) fn rest(&self) -> &[u8] {
        &self.ring.bytes(self.bid, self.len)[self.off as usize..]
    }
}

impl fmt::Debug for RingChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RingChunk({}, {}/{})", self.bid, self.off, self.len)
    }
}

impl Drop for RingChunk {
    fn drop(&mut self) {
        self.ring.recycle(self.bid);
    }
}

/// The state of a multishot receive, kept in its source (inline: no allocation of its
/// own, so an idle connection with a multishot armed costs what one with a readiness
/// poll does).
#[derive(Debug, Default)]
pub(crate) struct MultiRecv {
    /// Received bytes no read has taken yet, in order.
    pub(crate) chunks: ChunkQueue,
    /// The result of the CQE without `IORING_CQE_F_MORE` (the multishot ended): > 0 its
    /// bytes are the last chunk, 0 EOF, < 0 `-errno`.
    pub(crate) end: Option<i32>,
    /// A cancel was asked (too much queued, or a quiesce).
    pub(crate) stopping: bool,
    /// The stream is gone: what still comes back goes straight back to the ring.
    pub(crate) orphan: bool,
}

/// The chunks a multishot brought that no read took, in order: the first inline (a
/// read usually finds one), the others in a deque allocated only while more than one
/// waits and freed as soon as they are read, so a drained queue holds no memory.
#[derive(Debug, Default)]
pub(crate) struct ChunkQueue {
    head: Option<RingChunk>,
    rest: Option<Box<std::collections::VecDeque<RingChunk>>>,
}

impl ChunkQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    pub(crate) fn len(&self) -> usize {
        self.head.is_some() as usize + self.rest.as_ref().map_or(0, |r| r.len())
    }

    pub(crate) fn push_back(&mut self, c: RingChunk) {
        if self.head.is_none() {
            self.head = Some(c);
        } else {
            self.rest.get_or_insert_with(Default::default).push_back(c);
        }
    }

    pub(crate) fn front_mut(&mut self) -> Option<&mut RingChunk> {
        self.head.as_mut()
    }

    /// The chunks, front first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &RingChunk> {
        self.head.iter().chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    /// Drops the front chunk (giving its buffer back to the ring).
    pub(crate) fn pop_front(&mut self) {
        self.head = self.rest.as_mut().and_then(|r| r.pop_front());
        if self.rest.as_ref().is_some_and(|r| r.is_empty()) {
            self.rest = None;
        }
    }

    /// Drops every chunk (giving their buffers back) and the deque's memory.
    pub(crate) fn clear(&mut self) {
        self.head = None;
        self.rest = None;
    }
}

// Inline in `SourceType` (every source is as large as its largest variant): no larger
// than `Rename`'s two paths, so no source grows for it.
const _: () = assert!(
    std::mem::size_of::<MultiRecv>() <= std::mem::size_of::<(std::path::PathBuf, std::path::PathBuf)>()
);

/// The most chunks a stream queues before its multishot is cancelled (flow control: a
/// peer sending what nobody reads must not drain the ring; the next read re-arms).
pub(crate) const MAX_QUEUED_CHUNKS: usize = 8;
