#!/usr/bin/env python3
"""Fires N concurrent POST /task requests, one connection each, and records when each ends.

Standard library only (asyncio + raw sockets). Writes a JSON report to --out:
  {"n": N, "connected": c, "statuses": {"200": k, ...}, "errors": {...},
   "allSentAt": t, "done": [t, ...]}   (times: time.monotonic(), CLOCK_MONOTONIC,
                                          comparable with the orchestrator's clock)
Prints "sent N" on stdout once every request has been written.

--sources K spreads the connections over the local addresses 127.0.0.1 … 127.0.0.K
(all loopback on Linux): one source address has about 28,000 ephemeral ports
(net.ipv4.ip_local_port_range), too few for 100,000 connections to one port.
"""

import argparse
import asyncio
import json
import sys
import time


async def one(a, i, req, connect_sem, state):
    try:
        source = (f"127.0.0.{1 + i % a.sources}", 0) if a.sources > 1 else None
        async with connect_sem:
            reader, writer = await asyncio.open_connection(a.host, a.port, local_addr=source)
        state["connected"] += 1
        writer.write(req)
        await writer.drain()
        state["sent"] += 1
        if state["sent"] == a.n:
            state["allSentAt"] = time.monotonic()
            print(f"sent {a.n}", flush=True)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        hl = head.lower()
        if b"transfer-encoding: chunked" in hl:
            while True:
                size = int((await reader.readline()).strip().split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            i = hl.find(b"content-length:")
            if i >= 0:
                n = int(hl[i + 15:].split(b"\r\n", 1)[0])
                await reader.readexactly(n)
        state["done"].append(time.monotonic())
        state["statuses"][status] = state["statuses"].get(status, 0) + 1
        writer.close()
    except Exception as e:  # noqa: BLE001 - every failure is counted, none is fatal
        k = type(e).__name__
        state["errors"][k] = state["errors"].get(k, 0) + 1


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--body", required=True)
    ap.add_argument("--lb-key", required=True)
    ap.add_argument("--wk-key", required=True)
    ap.add_argument("--connecting", type=int, default=512, help="connects in progress at once")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--sources", type=int, default=1, help="local addresses 127.0.0.1..K")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    body = a.body.encode()
    req = (
        f"POST /task HTTP/1.1\r\nHost: {a.host}:{a.port}\r\nAuthorization: {a.lb_key}\r\n"
        f"x-wr-auth: {a.wk_key}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    state = {"n": a.n, "connected": 0, "sent": 0, "statuses": {}, "errors": {}, "allSentAt": None,
             "done": [], "startedAt": time.monotonic()}
    sem = asyncio.Semaphore(a.connecting)
    tasks = [asyncio.ensure_future(one(a, i, req, sem, state)) for i in range(a.n)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), a.timeout)
    except asyncio.TimeoutError:
        state["errors"]["Timeout"] = a.n - len(state["done"])
    with open(a.out, "w") as f:
        json.dump(state, f)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
