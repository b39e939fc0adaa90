//! ringway: a box whose memory the thread keeps for the next value of the same layout.
//!
//! A value made and dropped once per request (an HTTP/1.1 exchange's future, about 2 KiB)
//! is larger than glibc's per-thread cache takes (1,032 bytes): each `Box` of it goes
//! through `malloc`'s and `free`'s slow paths (about 390 instructions a request, measured
//! with callgrind). [`Recycled`] takes its block from a small per-thread shelf of blocks
//! of its layout and puts it back there when dropped, so a steady stream of such values
//! costs a `Vec` pop and push. A thread keeps at most [`KEEP`] blocks (and
//! [`KEEP_BYTES`]) of each of at most [`LAYOUTS`] layouts, none larger than
//! [`MAX_SIZE`] (2 MiB in all at most); others are allocated and freed as usual. Blocks
//! still shelved when the thread ends are freed with it. glommio's tasks take their
//! blocks the same way (`task::raw::RawTask::allocate`): a connection's task and the
//! tasks a request spawns are made and freed at the rate connections come.
//!
//! I/O sources (the state of one ring operation) are kept the same way, in a shelf of
//! their own: see [`SPARE_SOURCES`].
//!
//! Tested in ringway's `engine/tests/glommio_patches.rs` (this crate's own tests are not
//! run by ringway's CI).

use std::{
    alloc::{self, Layout},
    cell::RefCell,
    marker::PhantomData,
    ops::{Deref, DerefMut},
    pin::Pin,
    ptr::NonNull,
};

pub use crate::sys::source::{spare_sources, SPARE_SOURCES};

/// Most blocks of one layout a thread keeps.
pub const KEEP: usize = 64;
/// Most bytes of blocks of one layout a thread keeps (fewer than [`KEEP`] large blocks).
pub const KEEP_BYTES: usize = 128 * 1024;
/// Most layouts a thread keeps blocks of: a new one replaces the one least recently
/// taken from.
pub const LAYOUTS: usize = 16;
/// The largest block kept.
pub const MAX_SIZE: usize = 16 * 1024;

struct Shelf {
    layout: Layout,
    blocks: Vec<NonNull<u8>>,
}

impl Shelf {
    fn free_all(&mut self) {
        for block in self.blocks.drain(..) {
            // SAFETY: every shelved block was allocated with this layout and is owned by
            // the shelf alone.
            unsafe { alloc::dealloc(block.as_ptr(), self.layout) };
        }
    }
}

/// Ordered by use: a take moves its shelf one place toward the front (where lookups
/// start), a new layout comes in at the back, replacing the last when all are taken.
struct Shelves(Vec<Shelf>);

impl Drop for Shelves {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(Shelf::free_all);
    }
}

thread_local! {
    static SHELVES: RefCell<Shelves> = const { RefCell::new(Shelves(Vec::new())) };
}

fn take(layout: Layout) -> Option<NonNull<u8>> {
    SHELVES
        .try_with(|s| {
            let shelves = &mut s.borrow_mut().0;
            let i = shelves.iter().position(|x| x.layout == layout)?;
            let block = shelves[i].blocks.pop()?;
            if i > 0 {
                shelves.swap(i, i - 1);
            }
            Some(block)
        })
        .ok()
        .flatten()
}

/// Shelves `block`; `false`: not kept (its shelf is full, the thread is ending), the
/// caller frees it.
fn give(layout: Layout, block: NonNull<u8>) -> bool {
    SHELVES
        .try_with(|s| {
            let shelves = &mut s.borrow_mut().0;
            let i = match shelves.iter().position(|x| x.layout == layout) {
                Some(i) => i,
                None => {
                    if shelves.len() >= LAYOUTS {
                        if let Some(mut last) = shelves.pop() {
                            last.free_all();
                        }
                    }
                    shelves.push(Shelf {
                        layout,
                        blocks: Vec::new(),
                    });
                    shelves.len() - 1
                }
            };
            let shelf = &mut shelves[i];
            if shelf.blocks.len() >= KEEP.min(KEEP_BYTES / layout.size()) {
                return false;
            }
            shelf.blocks.push(block);
            true
        })
        .unwrap_or(false)
}

/// A block for `layout` (not zero-sized): a shelved one, or a fresh allocation; `None`
/// only when the allocator has none.
pub(crate) fn alloc_block(layout: Layout) -> Option<NonNull<u8>> {
    debug_assert!(layout.size() > 0);
    if layout.size() <= MAX_SIZE {
        if let Some(block) = take(layout) {
            return Some(block);
        }
    }
    // SAFETY: the layout's size is not zero.
    NonNull::new(unsafe { alloc::alloc(layout) })
}

/// Gives back a block [`alloc_block`] made for `layout`: shelved, or freed.
///
/// # Safety
/// `block` came from `alloc_block(layout)` (or the global allocator with `layout`), holds
/// no live value, and nothing refers to it any more.
pub(crate) unsafe fn free_block(layout: Layout, block: NonNull<u8>) {
    if layout.size() > MAX_SIZE || !give(layout, block) {
        alloc::dealloc(block.as_ptr(), layout);
    }
}

/// How many blocks of `T`'s layout this thread keeps now (for tests).
pub fn shelved<T>() -> usize {
    let layout = Layout::new::<T>();
    SHELVES
        .try_with(|s| {
            s.borrow()
                .0
                .iter()
                .find(|x| x.layout == layout)
                .map_or(0, |x| x.blocks.len())
        })
        .unwrap_or(0)
}

/// An owned `T` on the heap, like a `Box`, whose block comes from and goes back to this
/// thread's shelf for `T`'s layout (see the module's documentation). Not `Send`: the
/// block goes back to the shelf of the thread that dropped it, and values of this kind
/// are made and dropped on one executor.
pub struct Recycled<T> {
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

impl<T> Recycled<T> {
    /// `value`, moved into a block of its layout.
    pub fn new(value: T) -> Recycled<T> {
        Recycled::made_by(|| value)
    }

    /// The value `make` returns, made in a block of its layout and pinned there: the
    /// compiler can then build a large value (a future of a few KiB) in the block itself
    /// rather than on the stack and copy it over.
    #[inline(always)]
    pub fn pin_with(make: impl FnOnce() -> T) -> Pin<Recycled<T>> {
        // SAFETY: the value is never moved out of its block: `Recycled` hands out only
        // references, and its drop drops it in place.
        unsafe { Pin::new_unchecked(Recycled::made_by(make)) }
    }

    /// `value`, moved into a block of its layout and pinned there (what `Box::pin` is
    /// for a `Box`): a future to poll in place.
    pub fn pin(value: T) -> Pin<Recycled<T>> {
        Recycled::pin_with(|| value)
    }

    /// The value `make` returns, written into a block of its layout.
    #[inline(always)]
    fn made_by(make: impl FnOnce() -> T) -> Recycled<T> {
        let layout = Layout::new::<T>();
        let ptr = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            alloc_block(layout)
                .unwrap_or_else(|| alloc::handle_alloc_error(layout))
                .cast::<T>()
        };
        // SAFETY: `ptr` is valid for writes of a `T` and suitably aligned (a block of
        // `T`'s layout, or dangling for a zero-sized `T`). Should `make` panic, the block
        // is lost (not freed), never read.
        unsafe { ptr.as_ptr().write(make()) };
        Recycled {
            ptr,
            _owns: PhantomData,
        }
    }
}

impl<T> Deref for Recycled<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `ptr` holds an initialized `T` owned by `self`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for Recycled<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` is unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for Recycled<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` holds an initialized `T` owned by `self`, dropped once, here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        let layout = Layout::new::<T>();
        if layout.size() == 0 {
            return;
        }
        // SAFETY: the block came from `alloc_block(layout)`, its value was just dropped
        // and nothing refers to it any more.
        unsafe { free_block(layout, self.ptr.cast::<u8>()) };
    }
}

impl<T> Unpin for Recycled<T> {}
