#!/usr/bin/env python3
"""A DNS server on loopback for engine/tests/dns.rs, whose answers the test changes.

Usage: dns_server.py ANSWERS.json
Listens on UDP and TCP 127.0.0.1 (one free port for both), prints `port N` on stdout, and
answers every query from ANSWERS.json, re-read at each query, so the test changes the
answers by rewriting the file:

  {"api.ringway.test.": {"a": ["127.0.0.2"], "aaaa": [], "ttl": 1}}
  {"api.ringway.test.": {"rcode": "NXDOMAIN"}}     (or "SERVFAIL"; "drop": no answer)

A name not in the file gets NXDOMAIN. Each query is counted in ANSWERS.json.count.
Needs dnslib (Debian's python3-dnslib, installed by .ci/run).
"""
import json
import socket
import socketserver
import struct
import sys
import threading

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord

answers_path = sys.argv[1]
count_lock = threading.Lock()
count = 0


def answer(data):
    global count
    with count_lock:
        count += 1
        with open(answers_path + ".count", "w") as f:
            f.write(str(count))
    q = DNSRecord.parse(data)
    reply = q.reply()
    try:
        with open(answers_path) as f:
            table = json.load(f)
    except (OSError, ValueError):
        table = {}
    name = str(q.q.qname).lower()
    entry = table.get(name)
    if entry is None:
        reply.header.rcode = RCODE.NXDOMAIN
        return reply.pack()
    rcode = entry.get("rcode")
    if rcode == "drop":
        return None
    if rcode:
        reply.header.rcode = getattr(RCODE, rcode)
        return reply.pack()
    ttl = int(entry.get("ttl", 1))
    if q.q.qtype in (QTYPE.A, QTYPE.ANY):
        for ip in entry.get("a", []):
            reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(ip), ttl=ttl))
    if q.q.qtype in (QTYPE.AAAA, QTYPE.ANY):
        for ip in entry.get("aaaa", []):
            reply.add_answer(RR(q.q.qname, QTYPE.AAAA, rdata=AAAA(ip), ttl=ttl))
    return reply.pack()


class Udp(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        try:
            out = answer(data)
        except Exception as e:  # a malformed query gets no answer
            print(f"bad query: {e}", file=sys.stderr)
            return
        if out is not None:
            sock.sendto(out, self.client_address)


class Tcp(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            head = self.request.recv(2)
            if len(head) < 2:
                return
            (n,) = struct.unpack("!H", head)
            data = b""
            while len(data) < n:
                chunk = self.request.recv(n - len(data))
                if not chunk:
                    return
                data += chunk
            out = answer(data)
            if out is None:
                return
            self.request.sendall(struct.pack("!H", len(out)) + out)


class ThreadingUdp(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True


class ThreadingTcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    # A free UDP port whose TCP twin is free too (retried: the kernel picks the UDP one).
    for _ in range(100):
        udp = ThreadingUdp(("127.0.0.1", 0), Udp)
        port = udp.server_address[1]
        try:
            tcp = ThreadingTcp(("127.0.0.1", port), Tcp)
            break
        except OSError:
            udp.server_close()
    else:
        sys.exit("no port free for both UDP and TCP")
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    print(f"port {port}", flush=True)
    # Ends when the test closes our stdin (or kills us).
    threading.Thread(target=udp.serve_forever, daemon=True).start()
    sys.stdin.read()


if __name__ == "__main__":
    main()
