//! ringway: a clock read at most once per poll of a task.
//!
//! A proxied request asks for the time a dozen times or more (its trace, the pool's idle
//! stamps, stream deadlines, the access log), nearly all within the one or two polls of
//! its connection's task that carry it. [`now`] reads the system clock the first time it
//! is called in a poll and answers the same instant for the rest of that poll; outside a
//! task (another thread, the executor's own bookkeeping) it reads the system clock every
//! time.
//!
//! The instant it answers is never later than `Instant::now()` and at most one poll
//! older: a poll runs without blocking, so that is the CPU time of the code between the
//! first read and this one (microseconds), not a wait. Code that needs time to move
//! within one poll (a spin until a deadline) must read `Instant::now()` instead.
//!
//! Tested in ringway's `engine/tests/glommio_patches.rs` (this crate's own tests are not
//! run by ringway's CI).

use std::{cell::Cell, time::Instant};

#[derive(Clone, Copy)]
enum State {
    /// Not inside a task's poll: no caching.
    Outside,
    /// Inside a poll that has not read the clock yet.
    Unread,
    /// Inside a poll that read the clock at this instant.
    Read(Instant),
}

thread_local! {
    static CLOCK: Cell<State> = const { Cell::new(State::Outside) };
}

/// The time: read from the system clock at the first call in a task's poll, the same
/// instant for every later call in that poll (see the module's documentation).
#[inline]
pub fn now() -> Instant {
    CLOCK.with(|c| match c.get() {
        State::Read(t) => t,
        State::Unread => {
            let t = Instant::now();
            c.set(State::Read(t));
            t
        }
        State::Outside => Instant::now(),
    })
}

/// Marks a task's poll (its future's drop included) for [`now`]: from `enter` until
/// the scope is dropped, the first read is kept. Restores what was there before, so
/// a poll inside a poll (a nested executor, a panic unwinding through) stays correct.
pub(crate) struct PollScope(State);

impl PollScope {
    #[inline]
    pub(crate) fn enter() -> PollScope {
        PollScope(CLOCK.with(|c| c.replace(State::Unread)))
    }
}

impl Drop for PollScope {
    #[inline]
    fn drop(&mut self) {
        CLOCK.with(|c| c.set(self.0));
    }
}
