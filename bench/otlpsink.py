#!/usr/bin/env python3
"""An OTLP/HTTP sink for the tracing row (t) of the benchmark: answers every
`POST /v1/traces` with 200 and counts the requests and bytes; `GET /count` returns
them as JSON. Standard library only; the protobuf is not decoded (tests/tracing.rs
checks what is in it)."""

import argparse
import http.server
import json
import threading

COUNTS = {"requests": 0, "bytes": 0}
LOCK = threading.Lock()


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's naming
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        with LOCK:
            COUNTS["requests"] += 1
            COUNTS["bytes"] += n
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):  # noqa: N802
        with LOCK:
            body = json.dumps(COUNTS).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Sink).serve_forever()


if __name__ == "__main__":
    main()
