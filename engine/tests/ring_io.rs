//! The socket I/O that goes through the io_uring ring (ringway's change to the vendored
//! glommio, `vendor/glommio/RINGWAY-PATCHES.md`): reads are a readiness poll then a
//! queued `RECV` into a pooled buffer, writes a queued `SEND` of an owned copy, both
//! submitted with the executor's next `io_uring_enter`. Tested through glommio's
//! `TcpStream` as the engine uses it, over real sockets on 127.0.0.1: short and long
//! reads and writes, reads and writes dropped in flight (nothing lost, nothing sent
//! twice, nothing written into freed memory), more connections than the buffer pool
//! holds, and a connection moved between two executors (shards) between exchanges.
//!
//! The tests above the line "multishot receives" run with the executor's receive
//! buffer ring off (`recv_buffer_ring(None)`): that is the path every read takes where
//! the kernel refuses a provided-buffer ring, and the one a stream falls back to when
//! the ring runs dry. The tests below it run with a ring (small ones, to make it run
//! dry on purpose): one multishot `RECV` per stream serving many reads, partial reads
//! out of one buffer, exhaustion (a back-off to the path above, nothing lost, counted),
//! streams dropped with bytes in flight (every buffer back in the ring, no fd left),
//! EOF after data, and a connection moved between executors mid-life.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures_lite::future::poll_once;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

const WAIT: Duration = Duration::from_secs(10);

/// Runs `f` on a fresh executor with a connected pair: (ours, accepted by glommio;
/// theirs, a plain std socket).
fn with_pair<F, Fut>(f: F)
where
    F: FnOnce(TcpStream, std::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .recv_buffer_ring(None)
        .spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let theirs = std::net::TcpStream::connect(addr).expect("connect");
            theirs.set_read_timeout(Some(WAIT)).expect("timeout");
            let ours = listener.accept().await.expect("accept");
            ours.set_read_timeout(Some(WAIT)).expect("timeout");
            ours.set_write_timeout(Some(WAIT)).expect("timeout");
            f(ours, theirs).await;
        })
        .expect("executor")
        .join()
        .expect("join");
}

fn pattern(n: usize, salt: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(salt) % 251) as u8)
        .collect()
}

/// Lets the executor run a few loop turns (the queued SQEs go out, completions come in).
async fn turns(n: usize) {
    for _ in 0..n {
        glommio::yield_if_needed().await;
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn long_writes_come_back_short_and_write_all_sends_every_byte_in_order() {
    with_pair(|mut ours, theirs| async move {
        // 8 MiB, more than one ring send carries and than the socket buffers hold while
        // the peer reads slowly: writes come back short and are resubmitted.
        let sent = pattern(8 << 20, 7);
        let copy = sent.len();
        let reader = std::thread::spawn(move || {
            let mut theirs = theirs;
            let mut got = Vec::with_capacity(copy);
            let mut chunk = vec![0u8; 7_000];
            while got.len() < copy {
                let n = theirs.read(&mut chunk).expect("peer read");
                assert!(n > 0, "EOF after {} bytes", got.len());
                got.extend_from_slice(&chunk[..n]);
                if got.len() < 1 << 20 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            got
        });
        let mut shorts = 0;
        let mut off = 0;
        while off < sent.len() {
            let n = ours.write(&sent[off..]).await.expect("write");
            assert!(n > 0 && n <= sent.len() - off);
            if n < sent.len() - off {
                shorts += 1;
            }
            off += n;
        }
        assert!(
            shorts > 0,
            "an 8 MiB write must come back short at least once"
        );
        let got = reader.join().expect("reader");
        assert!(got == sent, "the peer got other bytes than were written");
    });
}

#[test]
fn small_ring_writes_and_large_direct_sends_interleave_in_order() {
    with_pair(|mut ours, theirs| async move {
        // Sizes on both sides of DIRECT_SEND_MIN (4 KiB): ring SENDs of owned copies and
        // `send` calls from the caller's bytes, alternating, while the peer reads slowly
        // enough that both kinds meet full socket buffers.
        let sizes = [
            100usize, 10_000, 3_000, 70_000, 1, 4_096, 4_095, 300_000, 17,
        ];
        let mut sent = Vec::new();
        for round in 0..40u32 {
            for (i, n) in sizes.iter().enumerate() {
                sent.extend_from_slice(&pattern(*n, round * 16 + i as u32));
            }
        }
        let copy = sent.len();
        let reader = std::thread::spawn(move || {
            let mut theirs = theirs;
            let mut got = Vec::with_capacity(copy);
            let mut chunk = vec![0u8; 9_000];
            while got.len() < copy {
                let n = theirs.read(&mut chunk).expect("peer read");
                assert!(n > 0, "EOF after {} bytes", got.len());
                got.extend_from_slice(&chunk[..n]);
                if got.len() < 2 << 20 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            got
        });
        let mut off = 0;
        for round in 0..40u32 {
            for (i, n) in sizes.iter().enumerate() {
                let piece = pattern(*n, round * 16 + i as u32);
                ours.write_all(&piece).await.expect("write");
                off += n;
            }
        }
        assert_eq!(off, copy);
        let got = reader.join().expect("reader");
        assert!(got == sent, "the peer got other bytes, or in another order");
    });
}

#[test]
fn reads_shorter_and_longer_than_one_receive_get_every_byte_in_order() {
    with_pair(|mut ours, mut theirs| async move {
        let sent = pattern(300_000, 3);
        let copy = sent.clone();
        let writer = std::thread::spawn(move || {
            // In pieces of odd sizes, so receives see both full and partial buffers.
            for piece in copy.chunks(12_345) {
                theirs.write_all(piece).expect("send");
            }
            theirs
        });
        let mut got = Vec::new();
        let mut small = [0u8; 1_000];
        let mut big = vec![0u8; 64 << 10];
        let mut i = 0;
        while got.len() < sent.len() {
            let n = if i % 2 == 0 {
                ours.read(&mut small).await.expect("read")
            } else {
                ours.read(&mut big).await.expect("read")
            };
            assert!(n > 0, "EOF after {} bytes", got.len());
            got.extend_from_slice(if i % 2 == 0 { &small[..n] } else { &big[..n] });
            i += 1;
        }
        assert!(got == sent, "bytes lost, duplicated or out of order");
        drop(writer.join().expect("writer"));
        // The peer closed: EOF, then EOF again.
        assert_eq!(ours.read(&mut small).await.expect("eof"), 0);
        assert_eq!(ours.read(&mut small).await.expect("eof again"), 0);
    });
}

#[test]
fn a_read_dropped_after_its_receive_completed_hands_its_bytes_to_the_next_read() {
    with_pair(|mut ours, mut theirs| async move {
        theirs.write_all(b"first part|").expect("send");
        let mut buf = [0u8; 64];
        // Wait for readiness (a poll, no buffer), then start a read and let its receive
        // complete without polling the read again, then drop it.
        ours.readable().await.expect("readable");
        {
            let read = ours.read(&mut buf);
            futures_lite::pin!(read);
            assert!(
                poll_once(&mut read).await.is_none(),
                "the receive is queued"
            );
            turns(5).await;
        }
        assert!(!ours.io_quiet(), "the received bytes wait in the stream");
        // A stream holding received bytes is not moved: detach gives it back.
        let ours = match ringway::fd::detach(ours) {
            Ok(_) => panic!("a stream with received bytes must not be detached"),
            Err((s, e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
                s
            }
        };
        let mut ours = ours;
        // The bytes are what the next read (and a readiness wait) sees first.
        ours.readable().await.expect("stashed bytes are readable");
        let mut small = [0u8; 5];
        let n = ours.read(&mut small).await.expect("read");
        assert_eq!(&small[..n], b"first");
        theirs.write_all(b"second").expect("send");
        let mut got = small[..n].to_vec();
        while got.len() < b"first part|second".len() {
            let n = ours.read(&mut buf).await.expect("read");
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"first part|second");
        assert!(ours.io_quiet(), "nothing left in the stream once read");
    });
}

#[test]
fn a_write_dropped_in_flight_is_not_sent_twice_and_the_stream_stays_correct() {
    with_pair(|mut ours, mut theirs| async move {
        // Start a write, let its send complete without polling the write again, drop it,
        // then write the same bytes (what a retried write does): they go out once.
        {
            let w = ours.write(b"hello ");
            futures_lite::pin!(w);
            assert!(poll_once(&mut w).await.is_none(), "the send is queued");
            turns(5).await;
        }
        assert!(!ours.io_quiet(), "a completed send not yet seen by a write");
        let n = ours.write(b"hello ").await.expect("retried write");
        assert_eq!(n, 6);
        assert!(ours.io_quiet());
        ours.write_all(b"world").await.expect("write");
        let mut got = [0u8; 11];
        theirs.read_exact(&mut got).expect("peer read");
        assert_eq!(&got, b"hello world");

        // A dropped write followed by other bytes: the stream says it is broken instead
        // of reporting the wrong bytes as written.
        {
            let w = ours.write(b"abc");
            futures_lite::pin!(w);
            assert!(poll_once(&mut w).await.is_none());
            turns(5).await;
        }
        let err = ours
            .write(b"xyz")
            .await
            .expect_err("other bytes after a dropped send");
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    });
}

#[test]
fn streams_dropped_with_sends_and_receives_in_flight_free_everything() {
    // A peer that never reads: writes stay queued or pending (the socket buffers fill),
    // and a read waits in the kernel. Dropping the stream cancels both; the buffers are
    // freed when the cancelled completions come back (never written into after). 200
    // rounds on one executor must leave no fds behind, and the executor keeps working.
    LocalExecutorBuilder::new(Placement::Unbound)
        .recv_buffer_ring(None)
        .spawn(|| async move {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let fds_before = ringway::fd::open_fds();
            let mut peers = Vec::new();
            let big = pattern(64 << 20, 1);
            for round in 0..200u32 {
                let mut theirs = std::net::TcpStream::connect(addr).expect("connect");
                let mut ours = listener.accept().await.expect("accept");
                // Exactly one full receive's worth first: a receive that fills its
                // buffer makes the next read receive at once, so that read's RECV
                // waits in the kernel (with its buffer) when it is dropped.
                theirs.write_all(&pattern(16 << 10, round)).expect("send");
                let mut first = vec![0u8; 16 << 10];
                ours.read_exact(&mut first).await.expect("read");
                assert!(first == pattern(16 << 10, round));
                // Odd rounds first make a large write, sent straight from the caller's
                // bytes until the socket buffers are full (64 MiB is more than
                // loopback's buffers hold); it waits for POLLOUT when dropped. Then
                // writes below DIRECT_SEND_MIN go through the ring: the stream is
                // dropped with the last one's SEND queued (with its owned buffer), or,
                // once the buffers are full, waiting for POLLOUT after EAGAIN.
                if round % 2 == 1 {
                    let w = ours.write_all(&big);
                    futures_lite::pin!(w);
                    for _ in 0..3 {
                        assert!(poll_once(&mut w).await.is_none(), "peer never reads");
                        turns(1).await;
                    }
                }
                let small = pattern(2_000, round);
                {
                    let w = async {
                        loop {
                            ours.write_all(&small).await.expect("small write");
                        }
                    };
                    futures_lite::pin!(w);
                    for _ in 0..3 {
                        assert!(poll_once(&mut w).await.is_none(), "peer never reads");
                        turns(1).await;
                    }
                }
                {
                    let mut buf = [0u8; 100];
                    let r = ours.read(&mut buf);
                    futures_lite::pin!(r);
                    assert!(poll_once(&mut r).await.is_none(), "peer sent nothing");
                    turns(1).await;
                    assert!(poll_once(&mut r).await.is_none(), "peer sent nothing");
                }
                drop(ours);
                peers.push(theirs);
                if peers.len() > 20 {
                    peers.clear();
                }
            }
            peers.clear();
            // Cancellations complete on the next turns; the fds go back.
            let deadline = Instant::now() + WAIT;
            while ringway::fd::open_fds() > fds_before + 2 && Instant::now() < deadline {
                turns(1).await;
            }
            assert!(
                ringway::fd::open_fds() <= fds_before + 2,
                "fds left behind: {} before, {} after",
                fds_before,
                ringway::fd::open_fds()
            );
            // The executor still does I/O.
            let mut theirs = std::net::TcpStream::connect(addr).expect("connect");
            let mut ours = listener.accept().await.expect("accept");
            theirs.write_all(b"ping").expect("send");
            let mut b = [0u8; 4];
            ours.read_exact(&mut b).await.expect("read");
            assert_eq!(&b, b"ping");
        })
        .expect("executor")
        .join()
        .expect("join");
}

/// Opens `n` loopback connections, has each peer send 40,000 bytes at once before any is
/// read, then reads them all concurrently: every connection must get its own bytes intact.
async fn busy_connections_read_intact(n: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut pairs = Vec::new();
    for _ in 0..n {
        let theirs = std::net::TcpStream::connect(addr).expect("connect");
        let ours = listener.accept().await.expect("accept");
        ours.set_read_timeout(Some(WAIT)).expect("timeout");
        pairs.push((ours, theirs));
    }
    for (i, (_, theirs)) in pairs.iter_mut().enumerate() {
        theirs.write_all(&pattern(40_000, i as u32)).expect("send");
    }
    let tasks: Vec<_> = pairs
        .into_iter()
        .enumerate()
        .map(|(i, (mut ours, theirs))| {
            glommio::spawn_local(async move {
                let mut got = vec![0u8; 40_000];
                ours.read_exact(&mut got).await.expect("read");
                assert!(got == pattern(40_000, i as u32), "connection {i}");
                drop(theirs);
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
}

#[test]
fn more_busy_connections_than_the_buffer_pool_holds_all_get_their_bytes() {
    // The pool keeps 64 free 16 KiB buffers per thread; 300 connections with a full
    // 16 KiB receive each at once take more than that: the rest are allocated, none
    // fails, and every byte arrives.
    LocalExecutorBuilder::new(Placement::Unbound)
        .recv_buffer_ring(None)
        .spawn(|| async move {
            busy_connections_read_intact(300).await;
        })
        .expect("executor")
        .join()
        .expect("join");
}

#[test]
fn a_connection_moves_between_two_executors_between_exchanges() {
    // Shard A answers one request, detaches the stream, shard B attaches it and answers
    // the next; the client sees one connection serve both, bytes intact.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel::<ringway::fd::DetachedFd>();
    let a = LocalExecutorBuilder::new(Placement::Unbound)
        .recv_buffer_ring(None)
        .spawn(move || async move {
            let (std_stream, _) = listener.accept().expect("accept");
            let fd = std::os::fd::OwnedFd::from(std_stream);
            // SAFETY (test): the fd is a connected TCP socket we own.
            let mut s: TcpStream = unsafe {
                std::os::fd::FromRawFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd))
            };
            s.set_read_timeout(Some(WAIT)).expect("timeout");
            let mut req = [0u8; 4];
            s.read_exact(&mut req).await.expect("read on A");
            assert_eq!(&req, b"one?");
            s.write_all(b"A says one").await.expect("write on A");
            assert!(s.io_quiet(), "nothing in flight between exchanges");
            let moved = ringway::fd::detach(s).map_err(|(_, e)| e).expect("detach");
            tx.send(moved).expect("hand over");
        })
        .expect("executor A");
    let mut client = std::net::TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    client.write_all(b"one?").expect("send");
    let mut got = [0u8; 10];
    client.read_exact(&mut got).expect("answer from A");
    assert_eq!(&got, b"A says one");
    a.join().expect("join A");
    let moved = rx.recv_timeout(WAIT).expect("the fd from A");
    // Sent while the connection belongs to no shard: must reach B.
    client.write_all(b"two?").expect("send");
    let b = LocalExecutorBuilder::new(Placement::Unbound)
        .recv_buffer_ring(None)
        .spawn(move || async move {
            let mut s = ringway::fd::attach(moved);
            s.set_read_timeout(Some(WAIT)).expect("timeout");
            let mut req = [0u8; 4];
            s.read_exact(&mut req).await.expect("read on B");
            assert_eq!(&req, b"two?");
            s.write_all(b"B says two").await.expect("write on B");
        })
        .expect("executor B");
    client.read_exact(&mut got).expect("answer from B");
    assert_eq!(&got, b"B says two");
    b.join().expect("join B");
}

// ---------------------------------------------------------------------------------
// multishot receives: one `RECV` armed per stream, buffers from the executor's ring.
// ---------------------------------------------------------------------------------

use glommio::{RecvBufferRing, RecvBufferRingStats};

fn ring(entries: u16, buf_size: u32) -> Option<RecvBufferRing> {
    Some(RecvBufferRing { entries, buf_size })
}

/// Runs `f` on a fresh executor with the receive buffer ring `r`.
fn on_executor<F, Fut>(r: Option<RecvBufferRing>, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .recv_buffer_ring(r)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("join");
}

fn stats() -> RecvBufferRingStats {
    glommio::recv_buffer_ring_stats()
        .expect("the kernel takes a provided-buffer ring (Linux 5.19+)")
}

/// Waits (bounded) until every buffer is back in the ring, and says so.
async fn until_ring_full() {
    let deadline = Instant::now() + WAIT;
    while stats().free < stats().entries && Instant::now() < deadline {
        turns(1).await;
    }
    let st = stats();
    assert_eq!(
        st.free, st.entries,
        "buffers not given back to the ring: {st:?}"
    );
}

/// A connected pair on the current executor: (ours, theirs).
async fn pair() -> (TcpStream, std::net::TcpStream) {
    let (ours, theirs) = common::glommio_pair(WAIT).await;
    ours.set_read_timeout(Some(WAIT)).expect("timeout");
    ours.set_write_timeout(Some(WAIT)).expect("timeout");
    (ours, theirs)
}

#[test]
fn one_multishot_serves_many_reads_and_partial_reads_take_one_buffer_in_pieces() {
    on_executor(ring(64, 4096), || async move {
        let (mut ours, mut theirs) = pair().await;
        let sent = pattern(300_000, 11);
        let copy = sent.clone();
        let writer = std::thread::spawn(move || {
            for piece in copy.chunks(12_345) {
                theirs.write_all(piece).expect("send");
            }
            theirs
        });
        let mut got = Vec::new();
        // 100 bytes: far less than one 4 KiB ring buffer, so each buffer is read in
        // pieces; 64 KiB: several buffers in one read.
        let mut small = [0u8; 100];
        let mut big = vec![0u8; 64 << 10];
        let mut reads = 0u64;
        while got.len() < sent.len() {
            let n = if reads % 3 != 2 {
                let n = ours.read(&mut small).await.expect("read");
                got.extend_from_slice(&small[..n]);
                n
            } else {
                let n = ours.read(&mut big).await.expect("read");
                got.extend_from_slice(&big[..n]);
                n
            };
            assert!(n > 0, "EOF after {} bytes", got.len());
            reads += 1;
        }
        assert!(got == sent, "bytes lost, duplicated or out of order");
        let st = stats();
        assert!(st.armed >= 1, "reads went through a multishot: {st:?}");
        assert!(
            st.armed * 10 < reads,
            "a multishot serves many reads: {} armed for {reads} reads",
            st.armed
        );
        drop(writer.join().expect("writer"));
        assert_eq!(ours.read(&mut small).await.expect("eof"), 0);
        assert_eq!(ours.read(&mut small).await.expect("eof again"), 0);
        // (A fast peer can make even one stream take every buffer before its cancel
        // for queueing too much lands: then it reads on through poll + RECV, as the
        // exhaustion test shows; nothing here depends on it.)
        until_ring_full().await;
    });
}

#[test]
fn a_streams_first_receive_is_single_and_its_later_reads_share_a_multishot() {
    on_executor(ring(16, 4096), || async move {
        let (mut ours, mut theirs) = pair().await;
        theirs.write_all(b"first request").expect("send");
        let mut buf = [0u8; 64];
        let n = ours.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"first request");
        let st = stats();
        assert_eq!((st.single, st.armed), (1, 0), "one single receive: {st:?}");
        // Nothing is left in the kernel: a connection closed now cancels nothing.
        assert!(ours.io_quiet(), "the single receive ended with its bytes");
        // Later reads go through one multishot, which stays armed between them.
        for i in 0..5u8 {
            theirs.write_all(&[b'a' + i; 10]).expect("send");
            let mut got = [0u8; 10];
            ours.read_exact(&mut got).await.expect("read");
            assert_eq!(got, [b'a' + i; 10]);
        }
        let st = stats();
        assert_eq!((st.single, st.armed), (1, 1), "then one multishot: {st:?}");
        assert!(!ours.io_quiet(), "the multishot stays armed between reads");
        // A single receive still waiting when its stream is dropped is cancelled, and
        // its buffer (taken only when bytes come) never leaves the ring.
        let (mut ours2, theirs2) = pair().await;
        {
            let read = ours2.read(&mut buf);
            futures_lite::pin!(read);
            assert!(poll_once(&mut read).await.is_none(), "no bytes yet");
            turns(2).await;
            assert!(
                poll_once(&mut read).await.is_none(),
                "the receive waits in the kernel"
            );
        }
        drop(ours2);
        drop(theirs2);
        assert_eq!(stats().single, 2, "{:?}", stats());
        drop(ours);
        drop(theirs);
        until_ring_full().await;
    });
}

#[test]
fn eof_comes_once_the_bytes_before_it_are_read() {
    on_executor(ring(16, 4096), || async move {
        let (mut ours, mut theirs) = pair().await;
        theirs.write_all(b"hello").expect("send");
        theirs
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        // Both the bytes and the EOF may be in the stream's queue before a read.
        ours.readable().await.expect("readable");
        turns(3).await;
        let mut two = [0u8; 2];
        assert_eq!(ours.read(&mut two).await.expect("read"), 2);
        assert_eq!(&two, b"he");
        let mut rest = [0u8; 64];
        let n = ours.read(&mut rest).await.expect("read");
        assert_eq!(&rest[..n], b"llo");
        assert_eq!(ours.read(&mut rest).await.expect("eof"), 0);
        assert_eq!(ours.read(&mut rest).await.expect("eof again"), 0);
        ours.readable().await.expect("EOF is readable");
        until_ring_full().await;
    });
}

#[test]
fn more_busy_connections_than_ring_buffers_back_off_and_lose_nothing() {
    // 8 buffers of 4 KiB for 40 connections with 40,000 unread bytes each: the ring
    // runs dry at once. The multishots that find it empty end with ENOBUFS, their
    // streams read through poll + RECV (counted, no error), and every byte arrives.
    on_executor(ring(8, 4096), || async move {
        busy_connections_read_intact(40).await;
        let st = stats();
        assert!(st.exhausted > 0, "the ring must have run dry: {st:?}");
        until_ring_full().await;
    });
}

#[test]
fn streams_dropped_with_received_bytes_queued_give_every_buffer_back() {
    // Each round: the peer sends 64 KiB, we read 5,000 bytes (more than the stream's
    // first receive, a single one of at most one 4 KiB buffer, brings: the multishot
    // armed after it brings more and keeps receiving), then drop the stream with bytes
    // queued and more in flight.
    // The buffers come back to the ring (the ones queued at once, the ones still in
    // the kernel with the cancelled multishot's last CQEs); no fd stays behind.
    on_executor(ring(16, 4096), || async move {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fds_before = ringway::fd::open_fds();
        let mut peers = Vec::new();
        for round in 0..100u32 {
            let mut theirs = std::net::TcpStream::connect(addr).expect("connect");
            let mut ours = listener.accept().await.expect("accept");
            theirs.write_all(&pattern(64 << 10, round)).expect("send");
            let mut head = [0u8; 5000];
            ours.read_exact(&mut head).await.expect("read");
            assert_eq!(&head[..], &pattern(64 << 10, round)[..5000]);
            if round % 2 == 0 {
                turns(1).await;
            }
            assert!(!ours.io_quiet(), "bytes queued, multishot armed");
            drop(ours);
            peers.push(theirs);
            if peers.len() > 20 {
                peers.clear();
            }
        }
        peers.clear();
        until_ring_full().await;
        let deadline = Instant::now() + WAIT;
        while ringway::fd::open_fds() > fds_before + 2 && Instant::now() < deadline {
            turns(1).await;
        }
        assert!(
            ringway::fd::open_fds() <= fds_before + 2,
            "fds left behind: {} before, {} after",
            fds_before,
            ringway::fd::open_fds()
        );
        // The executor still reads through its ring.
        let (mut ours, mut theirs) = pair().await;
        theirs.write_all(b"ping").expect("send");
        let mut b = [0u8; 4];
        ours.read_exact(&mut b).await.expect("read");
        assert_eq!(&b, b"ping");
    });
}

#[test]
fn a_connection_with_a_multishot_armed_moves_between_executors_mid_life() {
    // Shard A answers a request; its multishot stays armed. Bytes that arrive before
    // the hand-over keep the stream on A (detach refuses, A reads them); once they are
    // read, detach ends the multishot (quiesce) and B takes the connection and the
    // bytes sent while it belonged to no shard.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel::<ringway::fd::DetachedFd>();
    let a = LocalExecutorBuilder::new(Placement::Unbound)
        .recv_buffer_ring(ring(16, 4096))
        .spawn(move || async move {
            let (std_stream, _) = listener.accept().expect("accept");
            let fd = std::os::fd::OwnedFd::from(std_stream);
            // SAFETY (test): the fd is a connected TCP socket we own.
            let mut s: TcpStream = unsafe {
                std::os::fd::FromRawFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd))
            };
            s.set_read_timeout(Some(WAIT)).expect("timeout");
            let mut req = [0u8; 4];
            s.read_exact(&mut req).await.expect("read on A");
            assert_eq!(&req, b"one?");
            s.write_all(b"A says one").await.expect("write on A");
            assert!(
                s.io_quiet(),
                "the first receive was a single one: nothing is armed after it"
            );
            // The client sends more before the hand-over: it arrives through the
            // multishot the wait arms, so the stream must stay here.
            s.readable().await.expect("readable");
            turns(2).await;
            let mut s = match ringway::fd::detach(s) {
                Ok(_) => panic!("a stream with received bytes queued must not be detached"),
                Err((s, e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
                    s
                }
            };
            let mut early = [0u8; 5];
            s.read_exact(&mut early).await.expect("read on A");
            assert_eq!(&early, b"early");
            s.write_all(b"A says early").await.expect("write on A");
            let moved = ringway::fd::detach(s)
                .map_err(|(_, e)| e)
                .expect("an idle stream detaches: its multishot is ended first");
            until_ring_full().await;
            tx.send(moved).expect("hand over");
        })
        .expect("executor A");
    let mut client = std::net::TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    client.write_all(b"one?").expect("send");
    let mut got = [0u8; 10];
    client.read_exact(&mut got).expect("answer from A");
    assert_eq!(&got, b"A says one");
    client.write_all(b"early").expect("send");
    let mut got2 = [0u8; 12];
    client.read_exact(&mut got2).expect("second answer from A");
    assert_eq!(&got2, b"A says early");
    let moved = rx.recv_timeout(WAIT).expect("the fd from A");
    a.join().expect("join A");
    client.write_all(b"two?").expect("send");
    let b = LocalExecutorBuilder::new(Placement::Unbound)
        .recv_buffer_ring(ring(16, 4096))
        .spawn(move || async move {
            let mut s = ringway::fd::attach(moved);
            s.set_read_timeout(Some(WAIT)).expect("timeout");
            let mut req = [0u8; 4];
            s.read_exact(&mut req).await.expect("read on B");
            assert_eq!(&req, b"two?");
            s.write_all(b"B says two").await.expect("write on B");
            let st = stats();
            assert!(
                st.single >= 1,
                "B reads through its ring, first a single receive: {st:?}"
            );
        })
        .expect("executor B");
    client.read_exact(&mut got).expect("answer from B");
    assert_eq!(&got, b"B says two");
    b.join().expect("join B");
}

#[test]
fn readiness_waits_after_a_multishot_ended_with_bytes_queued_lose_nothing() {
    // A peer sends far more than one stream may queue: the multishot is cancelled once
    // 8 buffers wait (flow control), so it ends with bytes still queued. Readiness
    // waits then (what the HTTP/1.1 front's hang-up check does while a request waits
    // for its answer) must see those bytes, not drop them with the ended multishot.
    on_executor(ring(64, 4096), || async move {
        let (mut ours, mut theirs) = pair().await;
        let sent = pattern(200_000, 5);
        let copy = sent.clone();
        let writer = std::thread::spawn(move || {
            theirs.write_all(&copy).expect("send");
            theirs
        });
        let mut got = vec![0u8; 10];
        ours.read_exact(&mut got).await.expect("read");
        turns(5).await;
        for _ in 0..3 {
            ours.readable().await.expect("readable");
        }
        let mut buf = vec![0u8; 7_000];
        while got.len() < sent.len() {
            ours.readable().await.expect("readable");
            let n = ours.read(&mut buf).await.expect("read");
            assert!(n > 0, "EOF after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == sent, "bytes lost, duplicated or out of order");
        drop(writer.join().expect("writer"));
        until_ring_full().await;
    });
}

#[test]
fn multishot_receives_are_on_unless_the_environment_turns_them_off() {
    // The executor's default comes from GLOMMIO_RECV_BUFFER_RING: unset or `on`, the
    // default ring; `off` or `0`, none (this test reads what this run was given).
    match std::env::var("GLOMMIO_RECV_BUFFER_RING").ok().as_deref() {
        None | Some("on") => {
            assert_eq!(RecvBufferRing::from_env(), Some(RecvBufferRing::DEFAULT));
            // A default executor reads through it.
            LocalExecutorBuilder::new(Placement::Unbound)
                .spawn(|| async move {
                    let (mut ours, mut theirs) = pair().await;
                    theirs.write_all(b"ping").expect("send");
                    let mut b = [0u8; 4];
                    ours.read_exact(&mut b).await.expect("read");
                    assert_eq!(&b, b"ping");
                    // (A stream's first receive from the ring is a single one.)
                    let st = stats();
                    assert!(
                        st.single + st.armed >= 1,
                        "the read went through the ring: {st:?}"
                    );
                })
                .expect("executor")
                .join()
                .expect("join");
        }
        Some("off") | Some("0") => assert_eq!(RecvBufferRing::from_env(), None),
        Some(_) => {}
    }
}
