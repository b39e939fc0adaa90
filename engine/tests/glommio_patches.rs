//! Tests of the changes ringway makes to its vendored glommio (see
//! `vendor/glommio/RINGWAY-PATCHES.md`), each against the failure it fixes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

/// The preemption-before-first-run patch. An executor whose preempt timer fired while its
/// thread was off the CPU used to read "preempt now" as "nothing to run" and park with
/// runnable tasks queued; with nothing else to wake it, it slept for ever. ringway's
/// shards, which run with a 5 ms preempt timer, hung that way joining their mesh at
/// start-up about once in ten two-shard starts on a busy machine.
///
/// Here two executors with a 1 ms preempt timer share one CPU with a thread that spins
/// on it, so they are taken off it all the time, and join a mesh 200 times. Before the
/// patch this hung within a few dozen joins; every join must finish in 10 s.
#[test]
fn executors_preempted_off_cpu_do_not_park_with_runnable_tasks() {
    let cpu = core_affinity::get_core_ids()
        .and_then(|ids| ids.first().copied())
        .expect("at least one CPU to pin on");
    let stop = Arc::new(AtomicBool::new(false));
    let hog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            core_affinity::set_for_current(cpu);
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                std::hint::black_box(x);
            }
        })
    };
    let result = std::panic::catch_unwind(|| {
        for round in 0..200 {
            let mesh = MeshBuilder::<u32, _>::full(2, 16);
            let (tx, rx) = mpsc::channel();
            let handles: Vec<_> = (0..2)
                .map(|i| {
                    let mesh = mesh.clone();
                    let tx = tx.clone();
                    LocalExecutorBuilder::new(Placement::Fixed(cpu.id))
                        .name(&format!("patch-test-{i}"))
                        .io_memory(64 << 10)
                        .preempt_timer(Duration::from_millis(1))
                        .spawn(move || async move {
                            let joined = mesh.join().await;
                            let _ = tx.send(joined.is_ok());
                        })
                        .expect("executor starts")
                })
                .collect();
            drop(tx);
            let deadline = Instant::now() + Duration::from_secs(10);
            for _ in 0..2 {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(ok) => assert!(ok, "round {round}: a join failed"),
                    Err(_) => panic!("round {round}: an executor slept through its mesh join"),
                }
            }
            for h in handles {
                h.join().expect("executor exits");
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    hog.join().expect("hog thread");
    if let Err(e) = result {
        // A hung executor thread would keep the process alive: exit loudly instead.
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "(no message)".into());
        eprintln!("{msg}");
        std::process::exit(1);
    }
}

/// The waiter patch (`add_waiter_many`). An operation that completes through
/// `collect_rw` (an accept, a connect) added the polling task's waker to its source on
/// every poll. A task that polls such an operation often while it stays pending, as an
/// accept loop `or`-ed with a periodic stop check does (woken every 20 ms), piled up one
/// waker clone per poll until the task's i16 reference count overflowed and glommio
/// panicked: the h2c origin died that way after about 11 idle minutes (32,767 polls).
///
/// Here one task polls a pending accept 40,000 times, woken each time by a timer, as in
/// that loop but faster; then a client connects and the accept must complete.
#[test]
fn a_pending_accept_polled_many_times_keeps_one_waker() {
    const POLLS: u32 = 40_000;
    // Without the patch the overflow panics inside a wake, which glommio catches and
    // logs, and the task is never polled again: the executor hangs instead of failing.
    // So the verdict comes from a channel with a deadline, not from `join`.
    let (done, verdict) = mpsc::channel();
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let mut accept = std::pin::pin!(listener.accept());
            let began = Instant::now();
            for _ in 0..POLLS {
                let polled =
                    futures_lite::future::or(async { Some(accept.as_mut().await) }, async {
                        glommio::timer::sleep(Duration::from_micros(1)).await;
                        None
                    })
                    .await;
                assert!(polled.is_none(), "accept completed with no client");
            }
            assert!(
                began.elapsed() < Duration::from_secs(50),
                "timer loop too slow"
            );
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let accepted = glommio::timer::timeout(Duration::from_secs(10), async {
                Ok(accept.as_mut().await)
            })
            .await
            .expect("accept completes once a client connects");
            accepted.expect("accepted");
            done.send(()).expect("test waiting");
        })
        .expect("executor");
    verdict
        .recv_timeout(Duration::from_secs(60))
        .expect("the accept task finished (it hangs once its waker count overflows)");
    executor
        .join()
        .expect("the executor ran to the end without a panic");
}

/// An accept on a listener whose fd went bad is an error the accept loop can log, not a
/// panic: `yolo_accept` asks the listener's flags (`fcntl`) on its first accept, and
/// unwrapped the answer. First, a blocking listener (from `std`, so the accept toggles
/// `O_NONBLOCK` around its syscall) accepts as usual; then a second one's fd is closed
/// behind its back, and it is forgotten, so it does not close that number again.
#[test]
fn an_accept_on_a_listener_whose_fd_went_bad_is_an_error_not_a_panic() {
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(|| async move {
            let blocking = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = blocking.local_addr().expect("addr");
            // SAFETY: the fd comes from a listener that gave it up (`into_raw_fd`).
            let listener =
                unsafe { glommio::net::TcpListener::from_raw_fd(blocking.into_raw_fd()) };
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let (_, peer) = listener.accept_with_peer().await.expect("accepted");
            assert_eq!(peer.map(|p| p.ip()), Some(addr.ip()));

            let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let fd = gone.into_raw_fd();
            // SAFETY: as above.
            let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
            // SAFETY: the fd is this listener's own; it is forgotten below and never
            // uses the fd again after this accept.
            assert_eq!(unsafe { libc::close(fd) }, 0);
            let r = glommio::timer::timeout(Duration::from_secs(10), async {
                Ok(listener.accept_with_peer().await)
            })
            .await
            .expect("the accept ends at once");
            std::mem::forget(listener);
            match r {
                Err(e) => eprintln!("accept on a closed fd: {e}"),
                Ok(_) => panic!("accepted a connection on a closed fd"),
            }
        })
        .expect("executor");
    executor
        .join()
        .expect("the executor ran to the end without a panic");
}

/// The task clock (`glommio::clock::now`, see `vendor/glommio/RINGWAY-PATCHES.md`): inside
/// a task's poll the first read is kept for the rest of that poll, the next poll reads
/// the system clock again, every task has its own, and outside a task every read is fresh.
#[test]
fn the_task_clock_is_read_once_per_poll_and_fresh_outside_tasks() {
    use glommio::clock;
    let pause = Duration::from_millis(3);
    let a = clock::now();
    std::thread::sleep(pause);
    assert!(
        clock::now() >= a + pause,
        "outside an executor every read is fresh"
    );

    let (tx, rx) = mpsc::channel();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("clock-test")
        .io_memory(64 << 10)
        .spawn(move || async move {
            let first = clock::now();
            std::thread::sleep(pause);
            let same = clock::now();
            let real = Instant::now();
            // The next poll of this task, after a real wait.
            glommio::timer::sleep(Duration::from_millis(1)).await;
            let next = clock::now();
            // Another task's poll reads its own.
            let other = glommio::spawn_local(async move {
                let t = clock::now();
                std::thread::sleep(pause);
                (t, clock::now())
            })
            .await;
            let _ = tx.send((first, same, real, next, other));
        })
        .expect("executor starts")
        .join()
        .expect("executor ends");
    let (first, same, real, next, (other, other_again)) = rx.recv().expect("the task reported");
    assert_eq!(
        same, first,
        "a second read in the same poll answers the first"
    );
    assert!(real >= first + pause, "the system clock moved meanwhile");
    assert!(
        next >= real + Duration::from_millis(1),
        "the next poll reads anew"
    );
    assert!(other >= next, "another task's poll reads anew");
    assert_eq!(other_again, other, "and keeps its first read for its poll");
    let after = clock::now();
    std::thread::sleep(pause);
    assert!(
        clock::now() >= after + pause,
        "after the executor, reads on this thread are fresh again"
    );
}

/// `glommio::recycle::Recycled`: a box whose block the thread keeps for the next value of
/// the same layout (the HTTP/1.1 exchange's future, about 2 KiB, past glibc's per-thread
/// cache, is made and dropped once per request).
mod recycled {
    use std::cell::Cell;
    use std::rc::Rc;

    use glommio::recycle::{shelved, Recycled, KEEP, KEEP_BYTES, LAYOUTS, MAX_SIZE};

    /// Counts its drops.
    struct Big {
        _bytes: [u8; 2000],
        drops: Rc<Cell<u32>>,
    }
    impl Drop for Big {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }
    fn big(drops: &Rc<Cell<u32>>) -> Big {
        Big {
            _bytes: [7; 2000],
            drops: drops.clone(),
        }
    }

    #[test]
    fn a_dropped_value_s_block_holds_the_next_one_and_each_value_drops_once() {
        let drops = Rc::new(Cell::new(0));
        let a = Recycled::new(big(&drops));
        let at = &*a as *const Big;
        assert_eq!(shelved::<Big>(), 0);
        drop(a);
        assert_eq!(drops.get(), 1);
        assert_eq!(shelved::<Big>(), 1, "the block is kept");
        let b = Recycled::new(big(&drops));
        assert_eq!(&*b as *const Big, at, "and holds the next value");
        assert_eq!(shelved::<Big>(), 0);
        assert_eq!(b._bytes[1999], 7);
        drop(b);
        assert_eq!(drops.get(), 2);
    }

    #[test]
    fn a_thread_keeps_at_most_keep_blocks_and_keep_bytes_per_layout() {
        let drops = Rc::new(Cell::new(0));
        let many: Vec<_> = (0..KEEP + 10).map(|_| Recycled::new(big(&drops))).collect();
        drop(many);
        assert_eq!(drops.get() as usize, KEEP + 10);
        assert_eq!(shelved::<Big>(), KEEP);

        let large: Vec<_> = (0..20).map(|_| Recycled::new([0u8; 16 * 1024])).collect();
        drop(large);
        assert_eq!(shelved::<[u8; 16 * 1024]>(), KEEP_BYTES / (16 * 1024));

        const HUGE: usize = MAX_SIZE + 1;
        let huge = Recycled::new([1u8; HUGE]);
        assert_eq!(huge[HUGE - 1], 1);
        drop(huge);
        assert_eq!(shelved::<[u8; HUGE]>(), 0, "larger than MAX_SIZE: freed");

        let zst = Recycled::new(());
        drop(zst);
        assert_eq!(shelved::<()>(), 0);
    }

    #[test]
    fn a_new_layout_past_layouts_replaces_the_least_recently_taken() {
        macro_rules! shelve {
            ($($n:literal)*) => {$( drop(Recycled::new([0u8; $n])); )*};
        }
        // LAYOUTS layouts, the first taken from again (it moves toward the front).
        assert_eq!(LAYOUTS, 16);
        shelve!(8 16 24 32 40 48 56 64 72 80 88 96 104 112 120 128);
        drop(Recycled::new([0u8; 8]));
        for n in [8, 128] {
            assert_eq!(super::count(n), 1, "{n}");
        }
        // One more: the last (never taken from) makes room.
        shelve!(136);
        assert_eq!(super::count(136), 1);
        assert_eq!(super::count(128), 0);
        assert_eq!(super::count(8), 1);
    }

    #[test]
    fn a_future_in_a_recycled_box_is_polled_in_place_and_dropped_when_cancelled() {
        let seen = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name("recycle-test")
            .io_memory(64 << 10)
            .spawn(|| async move {
                let drops = Rc::new(Cell::new(0));
                let guard = big(&drops);
                let done = Recycled::pin(async move {
                    let guard = guard;
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                    guard._bytes.len()
                })
                .await;
                // A pending one, dropped: its state (holding a `Big`) goes with it.
                let guard = big(&drops);
                let mut pending = Recycled::pin(async move {
                    std::future::pending::<()>().await;
                    drop(guard);
                });
                let polled = futures_lite::future::poll_once(pending.as_mut()).await;
                assert!(polled.is_none());
                drop(pending);
                // Made in its block (`pin_with`), in the block the last one left.
                let guard = big(&drops);
                let made = Recycled::pin_with(|| async move {
                    let guard = guard;
                    glommio::yield_if_needed().await;
                    guard._bytes[0]
                });
                assert_eq!(made.await, 7);
                (done, drops.get())
            })
            .expect("executor starts")
            .join()
            .expect("executor ends");
        assert_eq!(
            seen,
            (2000, 3),
            "the three futures' `Big`s dropped, each once"
        );
    }
}

/// Blocks of `[u8; n]` this thread keeps (for `recycled::...replaces...`).
fn count(n: usize) -> usize {
    use glommio::recycle::shelved;
    match n {
        8 => shelved::<[u8; 8]>(),
        128 => shelved::<[u8; 128]>(),
        136 => shelved::<[u8; 136]>(),
        _ => unreachable!("not a layout of the test"),
    }
}

/// The spare-source shelf (`sys/source.rs` `SPARE_SOURCES`): a ring operation's source,
/// dropped once its result is taken, holds the next operation's state.
mod spare_sources {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use glommio::net::{TcpListener, TcpStream};
    use glommio::recycle::{spare_sources, SPARE_SOURCES};

    fn on_executor<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
        make: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name("spare-sources")
            .spawn(make)
            .expect("executor starts")
            .join()
            .expect("executor ends")
    }

    /// 2,000 small writes, each a ring send with its own source: after the first few the
    /// shelf stops growing (each send takes the source the one before left), and the
    /// peer receives every byte in order, so no send ran on another's state.
    #[test]
    fn each_send_takes_the_source_the_last_one_left_and_every_byte_arrives_in_order() {
        let (early, late, got, want) = on_executor(|| async move {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let reader = glommio::spawn_local(async move {
                let mut peer = listener.accept().await.expect("accept");
                let mut got = Vec::new();
                peer.read_to_end(&mut got).await.expect("read");
                got
            });
            let mut client = TcpStream::connect(addr).await.expect("connect");
            let mut want = Vec::new();
            let mut early = 0;
            for i in 0..2000 {
                let line = format!("{i:05}\n");
                client.write_all(line.as_bytes()).await.expect("write");
                want.extend_from_slice(line.as_bytes());
                if i == 20 {
                    early = spare_sources();
                }
            }
            let late = spare_sources();
            client.close().await.expect("close");
            drop(client);
            (early, late, reader.await, want)
        });
        assert!(early >= 1, "a finished send's source is shelved");
        assert!(
            late <= early + 4,
            "the shelf grew from {early} to {late} over 2,000 sends: they do not take it"
        );
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes arrived in another order");
    }

    /// More sources finished at once than the shelf holds: it keeps `SPARE_SOURCES` and
    /// frees the rest.
    #[test]
    fn a_thread_shelves_at_most_spare_sources() {
        const CONNS: usize = SPARE_SOURCES + 20;
        let (after_writes, got) = on_executor(|| async move {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let mut pairs = Vec::new();
            for _ in 0..CONNS {
                let client = TcpStream::connect(addr).await.expect("connect");
                let server = listener.accept().await.expect("accept");
                pairs.push((client, server));
            }
            // One write on every connection at once: CONNS sends in flight together.
            let writes: Vec<_> = pairs
                .into_iter()
                .enumerate()
                .map(|(i, (mut client, server))| {
                    glommio::spawn_local(async move {
                        client.write_all(&[i as u8]).await.expect("write");
                        (client, server)
                    })
                })
                .collect();
            let mut pairs = Vec::new();
            for w in writes {
                pairs.push(w.await);
            }
            let after_writes = spare_sources();
            let mut got = Vec::new();
            for (_client, server) in &mut pairs {
                let mut one = [0u8; 1];
                server.read_exact(&mut one).await.expect("the written byte");
                got.push(one[0]);
            }
            (after_writes, got)
        });
        assert_eq!(
            after_writes, SPARE_SOURCES,
            "the shelf is full, and no fuller"
        );
        let want: Vec<u8> = (0..CONNS).map(|i| i as u8).collect();
        assert_eq!(got, want, "each connection got its own byte");
    }

    /// A source whose operation is still in the kernel when it is dropped (a stream
    /// dropped with its receive armed) is not shelved: the kernel may still complete into
    /// it. The connections around it go on with their own bytes.
    #[test]
    fn a_source_dropped_while_its_receive_is_in_the_kernel_is_not_shelved() {
        let (before, after, echoed) = on_executor(|| async move {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let mut client = TcpStream::connect(addr).await.expect("connect");
            let mut server = listener.accept().await.expect("accept");
            let mut other = TcpStream::connect(addr).await.expect("connect");
            let mut other_server = listener.accept().await.expect("accept");
            // A first exchange, so finished sources are on the shelf.
            client.write_all(b"1").await.expect("write");
            let mut one = [0u8; 1];
            server.read_exact(&mut one).await.expect("read");
            // A receive armed and submitted, then its stream dropped.
            let mut buf = [0u8; 16];
            {
                let mut read = Box::pin(server.read(&mut buf));
                let polled = futures_lite::future::poll_once(read.as_mut()).await;
                assert!(polled.is_none(), "nothing was sent yet");
                glommio::executor().yield_task_queue_now().await;
            }
            let before = spare_sources();
            drop(server);
            let after = spare_sources();
            drop(client);
            other.write_all(b"after").await.expect("write");
            let n = other_server.read(&mut buf).await.expect("read");
            (before, after, buf[..n].to_vec())
        });
        assert_eq!(before, after, "the armed receive's source was shelved");
        assert_eq!(echoed, b"after", "another connection's read gets its bytes");
    }
}
