// Unless explicitly stated otherwise all files in this repository are licensed
// under the MIT/Apache-2.0 License, at your convenience
//
// This product includes software developed at Datadog (https://www.datadoghq.com/). Copyright 2020 Datadog, Inc.
//
//! This module provides glommio's networking support.
use crate::sys;
use nix::sys::socket::{MsgFlags, SockaddrLike};
use std::{io, os::unix::io::RawFd};

fn yolo_accept(
    fd: RawFd,
    nonblocking: &std::cell::Cell<Option<bool>>,
) -> Option<io::Result<(RawFd, Option<std::net::SocketAddr>)>> {
    // ringway: whether the listener is non-blocking is asked once per listener, not
    // once per accepted connection (an `fcntl` each); a listener that is non-blocking
    // already (ringway's are) needs no toggling either: two `fcntl` calls less.
    // ringway: a failing `fcntl` (the listener's fd gone bad) is the accept's error, not
    // a panic; flags this nix does not know are kept (`from_bits_retain`).
    let flags = match nonblocking.get() {
        Some(true) => None,
        _ => {
            let bits = match nix::fcntl::fcntl(fd, nix::fcntl::F_GETFL) {
                Ok(b) => b,
                Err(e) => return Some(Err(e.into())),
            };
            let flags = nix::fcntl::OFlag::from_bits_retain(bits);
            let nb = flags.contains(nix::fcntl::OFlag::O_NONBLOCK);
            nonblocking.set(Some(nb));
            (!nb).then_some(flags)
        }
    };
    if let Some(flags) = flags {
        if let Err(e) = nix::fcntl::fcntl(
            fd,
            nix::fcntl::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK),
        ) {
            return Some(Err(e.into()));
        }
    }
    let r = sys::accept_syscall(fd);
    if let Some(flags) = flags {
        if let Err(e) = nix::fcntl::fcntl(fd, nix::fcntl::F_SETFL(flags)) {
            // The accepted fd (if any) is closed rather than leaked.
            if let Ok((afd, _)) = &r {
                let _ = nix::unistd::close(*afd);
            }
            return Some(Err(e.into()));
        }
    }
    match r {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_send(fd: RawFd, buf: &[u8]) -> Option<io::Result<usize>> {
    match sys::send_syscall(fd, buf.as_ptr(), buf.len(), (MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL).bits()) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_peek(fd: RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    match sys::recv_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        (MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK).bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_recv(fd: RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    match sys::recv_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        MsgFlags::MSG_DONTWAIT.bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_recvmsg<T: SockaddrLike>(
    fd: RawFd,
    buf: &mut [u8],
    flags: MsgFlags,
) -> Option<io::Result<(usize, T)>> {
    match sys::recvmsg_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        (flags | MsgFlags::MSG_DONTWAIT).bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_sendmsg(
    fd: RawFd,
    buf: &[u8],
    addr: &impl nix::sys::socket::SockaddrLike,
) -> Option<io::Result<usize>> {
    match sys::sendmsg_syscall(
        fd,
        buf.as_ptr(),
        buf.len(),
        addr,
        MsgFlags::MSG_DONTWAIT.bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

mod datagram;
mod stream;
mod tcp_socket;
mod udp_socket;
mod unix;
pub use self::{
    stream::{Buffered, Preallocated},
    tcp_socket::{AcceptedTcpStream, TcpListener, TcpStream},
    udp_socket::UdpSocket,
    unix::{AcceptedUnixStream, UnixDatagram, UnixListener, UnixStream},
};
