#!/usr/bin/env python3
"""A tiny Andera Worker that timestamps tasks, for the slot hand-off measurement.

Standard library only. HTTP on --port:
  GET  /health  full §2 answer with the LB key (x-lb-auth), else {"status":"ready"}
  POST /task    answers {"success":true,"result":{"message":"Hello Andera!"}} after --delay-ms
  GET  /stats   {"tasks": [[arrival_ns, sent_ns], ...], "maxInFlight": n}
  POST /reset   forgets the recorded tasks
  POST /hold    tasks that arrive from now on are kept unanswered (the slot stays busy)
  POST /release answers the held tasks (each --delay-ms after it arrived, or at once)
WebSocket slot feed on --ws-port (see wsfeed.py), answering pings with the same limit.

arrival_ns is time.monotonic_ns() in the event-loop callback that received the
first byte of the request; sent_ns is taken right after the response was handed
to the kernel. With --limit 1 and tasks always queued in the load balancer, the
hand-off of a freed slot is arrival(n+1) - sent(n): the response travelling back
through the LB, the LB freeing the slot and dispatching the next queued task.
"""

import argparse
import asyncio
import json
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsfeed  # noqa: E402

TASK_BODY = b'{"success":true,"result":{"message":"Hello Andera!"}}'


class State:
    def __init__(self, a):
        self.key = a.key
        self.delay = a.delay_ms / 1000.0
        self.limit = a.limit
        self.ws_port = a.ws_port
        self.tasks = []
        self.in_flight = 0
        self.max_in_flight = 0
        # /hold: finish callbacks parked until /release (protocols, arrival times).
        self.holding = False
        self.held = []

    def health(self):
        return json.dumps(
            {
                "status": "ready",
                "group": "default",
                "contract": 1,
                "websocketPort": self.ws_port,
                "functions": [{"name": "hello", "params": {}}],
                "services": [],
                "tags": {},
                "slots": {"used": self.in_flight, "available": max(0, self.limit - self.in_flight),
                          "limit": self.limit, "queue": 0},
                "system": {"uptime": time.monotonic(), "usedMemoryPercent": 0, "cpuLoad": 0},
            }
        ).encode()


def response(status, body, reason="OK"):
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


class Http(asyncio.Protocol):
    def __init__(self, state):
        self.s = state
        self.buf = b""
        self.first = None
        self.t = None

    def connection_made(self, transport):
        self.t = transport

    def connection_lost(self, exc):
        self.t = None

    def data_received(self, data):
        now = time.monotonic_ns()
        if not self.buf:
            self.first = now
        self.buf += data
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            method, path, headers = wsfeed.parse_head(self.buf[:i])
            n = int(headers.get("content-length", "0") or 0)
            if len(self.buf) < i + 4 + n:
                return
            self.buf = self.buf[i + 4 + n:]
            arrival = self.first
            self.first = now if self.buf else None
            self.request(method, path, headers, arrival)

    def request(self, method, path, headers, arrival):
        s = self.s
        if path == "/task" and method == "POST":
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
            if s.holding:
                s.held.append((self, arrival))
            else:
                asyncio.get_running_loop().call_later(s.delay, self.finish_task, arrival)
        elif path == "/health":
            ok = wsfeed.strip_bearer(headers.get("x-lb-auth")) == s.key
            self.send(response(200, s.health() if ok else b'{"status":"ready"}'))
        elif path == "/stats":
            body = json.dumps({"tasks": s.tasks, "maxInFlight": s.max_in_flight}).encode()
            self.send(response(200, body))
        elif path == "/reset":
            s.tasks = []
            s.max_in_flight = s.in_flight
            self.send(response(200, b"{}"))
        elif path == "/hold":
            s.holding = True
            self.send(response(200, b"{}"))
        elif path == "/release":
            s.holding = False
            held, s.held = s.held, []
            self.send(response(200, json.dumps({"released": len(held)}).encode()))
            loop = asyncio.get_running_loop()
            for proto, arrival in held:
                wait = max(0.0, s.delay - (time.monotonic_ns() - arrival) / 1e9)
                loop.call_later(wait, proto.finish_task, arrival)
        elif path == "/logs":
            self.send(response(200, b'{"logs":[]}'))
        else:
            self.send(response(404, b'{"error":"Not found"}', "Not Found"))

    def send(self, data):
        if self.t is not None:
            self.t.write(data)

    def finish_task(self, arrival):
        self.s.in_flight -= 1
        self.send(response(200, TASK_BODY))
        self.s.tasks.append([arrival, time.monotonic_ns()])


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ws-port", type=int, required=True)
    ap.add_argument("--key", default=os.environ.get("LB_AUTH_KEY", ""))
    ap.add_argument("--limit", type=int, default=1)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    a = ap.parse_args()
    state = State(a)
    loop = asyncio.get_running_loop()
    http = await loop.create_server(lambda: Http(state), a.host, a.port, backlog=1024)
    feed = wsfeed.Feed(a.key, a.limit)
    ws = await asyncio.start_server(lambda r, w: wsfeed.handle(r, w, feed), a.host, a.ws_port)
    print(f"stubworker on {a.host}:{a.port} ws {a.ws_port}", file=sys.stderr, flush=True)
    async with http, ws:
        await asyncio.gather(http.serve_forever(), ws.serve_forever())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
