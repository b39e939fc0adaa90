//! Read and write timeouts of glommio's streams, which ringway sets on nearly every
//! connection. ringway's vendored glommio makes them lazy (`vendor/glommio/
//! RINGWAY-PATCHES.md`, "Lazy stream timeouts"): a stream's timer stays registered in
//! the reactor across operations and may fire for an earlier operation's deadline, so
//! these tests hold it to what the caller sees: a read, `readable()` or write that waits
//! longer than its timeout fails with `TimedOut`, never before the timeout has passed
//! since it began (also when the timer was registered by an earlier, shorter operation)
//! and not much after; many short operations never time out; a changed timeout applies
//! to the next operation, shorter or longer; a stream whose operation moves to another
//! task still wakes that task; and dropped streams leave no timer behind in the reactor.
//! Each runs with the executor's receive buffer ring (multishot receives) and without
//! (readiness poll then `RECV`), the two read paths.

mod common;

use std::io::{self, Write};
use std::time::{Duration, Instant};

use futures_lite::future::poll_once;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::{sleep, timeout};
use glommio::{LocalExecutorBuilder, Placement, RecvBufferRing};

/// A bound for anything that should have happened long before.
const WAIT: Duration = Duration::from_secs(10);
/// How late a timeout may fail: a loop turn, plus a busy shared machine's scheduling.
const LATE: Duration = Duration::from_millis(1500);

/// Runs `f` on a fresh executor, with the default receive buffer ring and without one.
fn on_both<F, Fut>(f: F)
where
    F: Fn() -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    for ring in [Some(RecvBufferRing::DEFAULT), None] {
        let f = f.clone();
        LocalExecutorBuilder::new(Placement::Unbound)
            .recv_buffer_ring(ring)
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join");
    }
}

/// A connected pair on the current executor: (ours, accepted by glommio; theirs, a
/// plain std socket).
async fn pair() -> (TcpStream, std::net::TcpStream) {
    common::glommio_pair(WAIT).await
}

/// Asserts that `r`, which began at `began`, failed with `TimedOut` after `limit` had
/// passed and not much later.
fn timed_out<T: std::fmt::Debug>(r: io::Result<T>, began: Instant, limit: Duration, what: &str) {
    let took = began.elapsed();
    let err = r.expect_err(what);
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{what}: {err}");
    assert!(
        took >= limit,
        "{what}: timed out after {took:?}, before its {limit:?}"
    );
    assert!(
        took < limit + LATE,
        "{what}: timed out only after {took:?} ({limit:?})"
    );
}

async fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    timeout(WAIT, async { Ok(s.read(buf).await) })
        .await
        .expect("the read ended")
}

#[test]
fn a_read_times_out_after_its_timeout_and_not_before() {
    on_both(|| async {
        let (mut ours, _theirs) = pair().await;
        let t = Duration::from_millis(150);
        ours.set_read_timeout(Some(t)).expect("timeout");
        let mut buf = [0u8; 64];
        let began = Instant::now();
        timed_out(
            read_some(&mut ours, &mut buf).await,
            began,
            t,
            "a read of nothing",
        );
        // And again: the stream's timer is registered once and re-armed.
        let began = Instant::now();
        timed_out(
            read_some(&mut ours, &mut buf).await,
            began,
            t,
            "a second read",
        );
    });
}

#[test]
fn readable_times_out_after_its_timeout_and_not_before() {
    on_both(|| async {
        let (mut ours, mut theirs) = pair().await;
        let t = Duration::from_millis(150);
        ours.set_read_timeout(Some(t)).expect("timeout");
        let began = Instant::now();
        let r = timeout(WAIT, async { Ok(ours.readable().await) })
            .await
            .expect("ended");
        timed_out(r, began, t, "readable() with nothing sent");
        theirs.write_all(b"x").expect("send");
        timeout(WAIT, async { Ok(ours.readable().await) })
            .await
            .expect("ended")
            .expect("readable once a byte came");
    });
}

/// The timer a first operation registered fires while a later one waits, before the
/// later one's deadline: the later one must go on waiting for its own full timeout.
#[test]
fn a_timer_registered_by_an_earlier_operation_does_not_fail_a_later_one_early() {
    on_both(|| async {
        let (mut ours, mut theirs) = pair().await;
        let t = Duration::from_millis(300);
        ours.set_read_timeout(Some(t)).expect("timeout");
        let mut buf = [0u8; 64];
        // One read waits (the timer goes in for now + 300 ms) and completes.
        let read = ours.read(&mut buf);
        futures_lite::pin!(read);
        assert!(poll_once(&mut read).await.is_none(), "nothing sent yet");
        theirs.write_all(b"a").expect("send");
        assert_eq!(
            timeout(WAIT, async { Ok(read.await) })
                .await
                .expect("read")
                .expect("a"),
            1
        );
        sleep(Duration::from_millis(200)).await;
        // This one waits from 200 ms on: the timer fires at 300 ms, for the first
        // read's deadline; this read's is at 500 ms.
        let began = Instant::now();
        timed_out(
            read_some(&mut ours, &mut buf).await,
            began,
            t,
            "the later read",
        );
    });
}

/// Many short reads and writes, spread over several timeouts' worth of time, each
/// waiting less than the timeout: none times out, however often the stream's timer
/// fires for a deadline that is no longer anyone's; then an idle read still does.
#[test]
fn many_short_operations_never_time_out_and_the_next_idle_one_does() {
    on_both(|| async {
        let (mut ours, theirs) = pair().await;
        let t = Duration::from_millis(120);
        ours.set_read_timeout(Some(t)).expect("timeout");
        ours.set_write_timeout(Some(t)).expect("timeout");
        let rounds = 40;
        let peer = std::thread::spawn(move || {
            let mut theirs = theirs;
            let mut buf = [0u8; 4];
            for i in 0..rounds {
                // Each answer comes 0..60 ms after the question: always within 120 ms.
                std::thread::sleep(Duration::from_millis((i * 7 % 61) as u64));
                theirs.write_all(&(i as u32).to_le_bytes()).expect("answer");
                io::Read::read_exact(&mut theirs, &mut buf).expect("ack");
                assert_eq!(u32::from_le_bytes(buf), i as u32);
            }
            theirs
        });
        let began = Instant::now();
        let mut buf = [0u8; 4];
        for i in 0..rounds {
            timeout(WAIT, async { Ok(ours.read_exact(&mut buf).await) })
                .await
                .expect("ended")
                .unwrap_or_else(|e| panic!("round {i}: {e}"));
            assert_eq!(u32::from_le_bytes(buf), i as u32);
            ours.write_all(&buf).await.expect("ack");
        }
        let _theirs = peer.join().expect("peer");
        assert!(began.elapsed() > 4 * t, "the rounds span several timeouts");
        let began = Instant::now();
        timed_out(
            read_some(&mut ours, &mut [0u8; 4]).await,
            began,
            t,
            "the idle read",
        );
    });
}

/// `set_read_timeout` applies to the next operation, whether it shortens the timeout
/// (the registered timer fires too late for it) or lengthens it.
#[test]
fn a_changed_timeout_applies_to_the_next_operation_shorter_or_longer() {
    on_both(|| async {
        let (mut ours, mut theirs) = pair().await;
        let mut buf = [0u8; 64];
        ours.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let read = ours.read(&mut buf);
        futures_lite::pin!(read);
        assert!(poll_once(&mut read).await.is_none(), "nothing sent yet");
        theirs.write_all(b"a").expect("send");
        timeout(WAIT, async { Ok(read.await) })
            .await
            .expect("read")
            .expect("a");
        // Timer registered for +30 s; this read's 100 ms must not wait for it.
        let short = Duration::from_millis(100);
        ours.set_read_timeout(Some(short)).expect("timeout");
        let began = Instant::now();
        timed_out(
            read_some(&mut ours, &mut buf).await,
            began,
            short,
            "a shortened timeout",
        );
        let long = Duration::from_millis(400);
        ours.set_read_timeout(Some(long)).expect("timeout");
        let began = Instant::now();
        timed_out(
            read_some(&mut ours, &mut buf).await,
            began,
            long,
            "a lengthened timeout",
        );
        // No timeout at all: the read waits until bytes come.
        ours.set_read_timeout(None).expect("timeout");
        let read = ours.read(&mut buf);
        futures_lite::pin!(read);
        assert!(poll_once(&mut read).await.is_none(), "nothing sent yet");
        sleep(Duration::from_millis(300)).await;
        assert!(
            poll_once(&mut read).await.is_none(),
            "no timeout, no failure"
        );
        theirs.write_all(b"b").expect("send");
        assert_eq!(
            timeout(WAIT, async { Ok(read.await) })
                .await
                .expect("read")
                .expect("b"),
            1
        );
    });
}

/// A read that waited in one task (its waker in the timer's slot) and was dropped there;
/// the stream's next read runs in another task: the timer must wake that task.
#[test]
fn a_stream_read_from_another_task_is_still_woken_by_its_timeout() {
    on_both(|| async {
        let (ours, _theirs) = pair().await;
        let t = Duration::from_millis(150);
        ours.set_read_timeout(Some(t)).expect("timeout");
        let mut ours = glommio::spawn_local(async move {
            let mut ours = ours;
            let mut buf = [0u8; 8];
            {
                // The read is dropped pending at the end of this block.
                let read = ours.read(&mut buf);
                futures_lite::pin!(read);
                assert!(poll_once(&mut read).await.is_none(), "nothing sent yet");
            }
            ours
        })
        .await;
        let began = Instant::now();
        // The dropped read's deadline carries over to this one (it continues the same
        // wait on the socket), so it fails within the timeout from the first read on.
        let r = read_some(&mut ours, &mut [0u8; 8]).await;
        let err = r.expect_err("the read in the other task times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            began.elapsed() < t + LATE,
            "woken late: {:?}",
            began.elapsed()
        );
        // And a fresh read in yet another task times out after its own full timeout.
        glommio::spawn_local(async move {
            let began = Instant::now();
            timed_out(
                read_some(&mut ours, &mut [0u8; 8]).await,
                began,
                t,
                "a fresh read",
            );
        })
        .await;
    });
}

/// A write to a peer that stops reading fills both socket buffers and then waits: it
/// fails with `TimedOut` after the write timeout, counted from its own start. Small
/// writes go through ring `SEND`s, large ones through a direct `send` and a writability
/// poll. The peer reads for a while after the buffers first filled, so a write that
/// waited completes, and the next write that waits must get a deadline of its own (a
/// large write completed by a direct `send` after waiting used to keep the old one).
#[test]
fn a_write_to_a_peer_that_stops_reading_times_out_after_its_own_timeout() {
    for size in [1024usize, 64 * 1024] {
        on_both(move || async move {
            let (mut ours, theirs) = pair().await;
            let t = Duration::from_millis(300);
            ours.set_write_timeout(Some(t)).expect("timeout");
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let peer = std::thread::spawn(move || {
                let mut theirs = theirs;
                std::thread::sleep(Duration::from_millis(100));
                theirs
                    .set_read_timeout(Some(Duration::from_millis(10)))
                    .expect("timeout");
                let stop = Instant::now() + Duration::from_millis(50);
                let mut buf = vec![0u8; 64 * 1024];
                while Instant::now() < stop {
                    let _ = io::Read::read(&mut theirs, &mut buf);
                }
                // Reads no more; keeps the socket open until the test is done.
                let _ = done_rx.recv_timeout(WAIT);
            });
            let chunk = vec![7u8; size];
            let began_all = Instant::now();
            let mut written = 0usize;
            loop {
                assert!(
                    began_all.elapsed() < WAIT,
                    "writes never timed out ({written} B)"
                );
                let began = Instant::now();
                let r = timeout(WAIT, async { Ok(ours.write(&chunk).await) })
                    .await
                    .expect("the write ended");
                match r {
                    Ok(n) => written += n,
                    Err(e) => {
                        timed_out(Err::<(), _>(e), began, t, "a write that cannot go on");
                        break;
                    }
                }
            }
            assert!(written > 0, "some bytes went before the buffers filled");
            let _ = done_tx.send(());
            peer.join().expect("peer");
        });
    }
}

/// Streams are created, wait on a timed read (their timers go into the reactor) and are
/// dropped, thousands of them: the reactor's timer maps come back to what they held.
#[test]
fn dropped_streams_leave_no_timers_in_the_reactor() {
    on_both(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let before = glommio::timer_counts().expect("on an executor");
        for round in 0..20 {
            let mut held = Vec::new();
            for _ in 0..100 {
                let theirs = std::net::TcpStream::connect(addr).expect("connect");
                let mut ours = listener.accept().await.expect("accept");
                ours.set_read_timeout(Some(Duration::from_secs(60)))
                    .expect("timeout");
                ours.set_write_timeout(Some(Duration::from_secs(60)))
                    .expect("timeout");
                let mut buf = [0u8; 8];
                {
                    // A read that waits, then is dropped: the timer stays registered.
                    let read = ours.read(&mut buf);
                    futures_lite::pin!(read);
                    assert!(poll_once(&mut read).await.is_none(), "nothing sent yet");
                }
                (&theirs).write_all(b"hi").expect("send");
                let n = read_some(&mut ours, &mut buf).await.expect("read");
                assert_eq!(&buf[..n], b"hi");
                held.push((ours, theirs));
            }
            let (pending, by_id) = glommio::timer_counts().expect("on an executor");
            assert!(
                pending >= before.0 + 100 && by_id >= before.1 + 100,
                "round {round}: each held stream has its read timer registered \
                 ({pending}, {by_id} vs {before:?})"
            );
            drop(held);
            assert_eq!(
                glommio::timer_counts().expect("on an executor"),
                before,
                "round {round}: dropped streams left timers behind"
            );
        }
    });
}
