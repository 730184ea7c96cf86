#!/usr/bin/env python3
"""A minimal Andera WebSocket slot feed (protocol §2), standard library only.

The load balancer connects to ws://host:PORT/ with `Sec-WebSocket-Protocol: <LB key>`
and sends the text frame `ping`; this server answers every `ping` with
`{"status":"ready","slots":{"used":0,"available":L,"limit":L,"queue":0}}`.
It never pushes unprompted (so it adds no background load to a benchmark), closes
a connection with a wrong key with code 4001, and answers a plain
`GET /stats` (no upgrade) with `{"open": <feeds open>, "accepted": n, "pings": n}`
so the benchmark can wait until every feed is connected and quiet.

Run alone:   python3 wsfeed.py --port 3001 --key KEY --limit 100000
Or import `serve_ws(reader, writer, first_request_bytes, feed)` from another stub.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Feed:
    """State shared by all connections of one feed server."""

    def __init__(self, key, limit):
        self.key = key
        self.limit = limit
        self.open = 0
        self.accepted = 0
        self.pings = 0

    def answer(self):
        return json.dumps(
            {
                "status": "ready",
                "slots": {"used": 0, "available": self.limit, "limit": self.limit, "queue": 0},
            }
        ).encode()

    def stats(self):
        return {"open": self.open, "accepted": self.accepted, "pings": self.pings}


def parse_head(head):
    """(method, path, {lower-case header: value}) of an HTTP request head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    method, path = (parts + ["", ""])[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return method, path, headers


def frame(opcode, payload):
    """An unmasked server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


async def read_frame(reader):
    """(opcode, payload) of the next client frame (continuations are not merged: the LB never fragments)."""
    b0, b1 = await reader.readexactly(2)
    opcode = b0 & 0x0F
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
    data = bytearray(await reader.readexactly(n))
    for i in range(n):
        data[i] ^= mask[i & 3]
    return opcode, bytes(data)


def strip_bearer(v):
    v = (v or "").strip()
    return v[7:].strip() if v.lower().startswith("bearer ") else v


async def serve_ws(reader, writer, headers, feed):
    """Completes the handshake for an upgrade request already read, then serves frames."""
    ws_key = headers.get("sec-websocket-key", "")
    proto = headers.get("sec-websocket-protocol", "")
    offered = [p.strip() for p in proto.split(",") if p.strip()]
    accept = base64.b64encode(hashlib.sha1(ws_key.encode() + GUID).digest()).decode()
    resp = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
    )
    if offered:
        resp += f"Sec-WebSocket-Protocol: {offered[0]}\r\n"
    writer.write((resp + "\r\n").encode())
    if not any(strip_bearer(p) == feed.key for p in offered):
        writer.write(frame(0x8, struct.pack("!H", 4001) + b"Unauthorized"))
        await writer.drain()
        writer.close()
        return
    feed.open += 1
    feed.accepted += 1
    try:
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 0x1:  # text
                if payload.strip() == b"ping":
                    feed.pings += 1
                    writer.write(frame(0x1, feed.answer()))
            elif opcode == 0x9:  # ping frame
                writer.write(frame(0xA, payload))
            elif opcode == 0x8:  # close
                writer.write(frame(0x8, payload[:2]))
                await writer.drain()
                break
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        pass
    finally:
        feed.open -= 1
        writer.close()


async def handle(reader, writer, feed):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
        writer.close()
        return
    _, path, headers = parse_head(head)
    if headers.get("upgrade", "").lower() == "websocket":
        await serve_ws(reader, writer, headers, feed)
        return
    body = json.dumps(feed.stats()).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    try:
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", default=os.environ.get("LB_AUTH_KEY", ""))
    ap.add_argument("--limit", type=int, default=100000)
    a = ap.parse_args()
    feed = Feed(a.key, a.limit)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, feed), a.host, a.port, backlog=4096, limit=1 << 16
    )
    print(f"wsfeed listening on {a.host}:{a.port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
