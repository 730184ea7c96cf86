"""Many sync tasks waiting for one busy slot: what each costs andera-lb (row w of
bench/run) and where its heap goes (bench/heap). Standard library only.

The Worker is bench/stubworker.py with one slot, put on hold (POST /hold) so that
the first task keeps the slot and every later one waits in andera-lb's queue;
bench/qclient.py opens one connection per task. Clients "leave" by being killed:
every connection closes at once, as when a burst of clients gives up.
"""

import json
import os
import signal
import socket
import statistics
import sys
import time



def _bench():
    """bench.py as the running orchestrator knows it: bench/run runs it as __main__ (its
    LB key is drawn at import, so a second import would have another one)."""
    main = sys.modules.get("__main__")
    if os.path.basename(getattr(main, "__file__", "")) == "bench.py":
        return main
    import bench
    return bench


_b = _bench()
HERE, LB_KEY, LOAD_CPU, PROXY_CPU = _b.HERE, _b.LB_KEY, _b.LOAD_CPU, _b.PROXY_CPU
TASK_BODY, WK_KEY, http_get, pct = _b.TASK_BODY, _b.WK_KEY, _b.http_get, _b.pct
read_answer, say, tree, vm_kib = _b.read_answer, _b.say, _b.tree, _b.vm_kib

# Tasks waiting at once in row w; 100,000 needs that many file descriptors in
# andera-lb and in the client (RLIMIT_NOFILE), else the point is skipped and says why.
WAIT_SIZES = [int(x) for x in os.environ.get("BENCH_WAIT_TASKS", "10000 100000").split()]
# Tasks that pass the one slot while the queue is full (the hand-off sample).
WAIT_HANDOFFS = int(os.environ.get("BENCH_WAIT_HANDOFFS", "200"))
WAIT_TASK_MS = float(os.environ.get("BENCH_WAIT_TASK_MS", "20"))
# Loopback source addresses: about 28,000 ephemeral ports each.
CONNS_PER_SOURCE = 20000


def task_request(body=TASK_BODY):
    return (f"POST /task HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {LB_KEY}\r\n"
            f"x-wr-auth: {WK_KEY}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n{body}").encode()


def fd_room():
    """File descriptors this process may open (its hard limit, which children inherit)."""
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


class Waiting:
    """One 1-slot stub Worker, and helpers to fill andera-lb's queue and empty it."""

    def __init__(self, b, port_key="g"):
        self.b = b
        self.port = b.port[port_key]
        self.ws_port = b.port[port_key + "_ws"]
        self.stub = b.spawn("stubworker-w", [sys.executable, os.path.join(HERE, "stubworker.py"),
                                             "--port", str(self.port), "--ws-port",
                                             str(self.ws_port), "--key", LB_KEY, "--limit", "1",
                                             "--delay-ms", str(WAIT_TASK_MS)], cpu=LOAD_CPU)
        b.wait_port(self.port, self.stub)
        b.wait_port(self.ws_port, self.stub)
        self.url = f"http://127.0.0.1:{self.port}"

    def control(self, path):
        return json.loads(http_get(self.port, path, method="POST", body=b"")[1])

    def stats(self):
        return json.loads(http_get(self.port, "/stats")[1])

    def warm(self, lb_port, n=50):
        """n tasks one after another: one-time allocations are not charged per task."""
        s = socket.create_connection(("127.0.0.1", lb_port), timeout=30)
        try:
            req = task_request()
            for _ in range(n):
                s.sendall(req)
                st = read_answer(s)
                if st != 200:
                    raise RuntimeError(f"warm-up task answered {st}")
        finally:
            s.close()

    def fill(self, lb_port, n, name):
        """Holds the slot and sends n + 1 tasks (the first takes the slot); returns the
        client process once andera-lb reports n waiting and the depth is steady."""
        self.control("/hold")
        b = self.b
        out = os.path.join(b.tmp, f"{name}.json")
        sources = max(1, -(-(n + 1) // CONNS_PER_SOURCE))
        qc = b.spawn(name, [sys.executable, os.path.join(HERE, "qclient.py"), "--port",
                            str(lb_port), "--n", str(n + 1), "--body", TASK_BODY, "--lb-key",
                            LB_KEY, "--wk-key", WK_KEY, "--out", out, "--timeout", "3600",
                            "--sources", str(sources)], cpu=LOAD_CPU, stop_sig=signal.SIGKILL)
        qc.out = out
        t0 = time.monotonic()
        last, since = -1, time.monotonic()
        while time.monotonic() - t0 < 600:
            if qc.poll() is not None:
                raise RuntimeError(f"qclient exited ({qc.returncode}):\n{b.log_tail(qc)}")
            d = b.lb_health()["queue"]["depth"]
            if d != last:
                last, since = d, time.monotonic()
            elif d >= n and time.monotonic() - since > 1.0:
                qc.fill_s = since - t0
                return qc
            time.sleep(0.2)
        raise RuntimeError(f"queue depth {last} after 600 s, wanted {n}")

    def leave(self, qc, timeout=300):
        """Kills the client (every connection closes) and waits for an empty queue;
        returns the seconds it took."""
        t0 = time.monotonic()
        self.b.stop(qc)
        while time.monotonic() - t0 < timeout:
            if self.b.lb_health()["queue"]["depth"] == 0:
                return time.monotonic() - t0
            time.sleep(0.2)
        raise RuntimeError("the queue did not empty after its clients left")

    def release(self):
        """Answers the held task(s): the slot frees."""
        return self.control("/release")["released"]

    def handoffs(self, want, timeout=120):
        """Lets `want` queued tasks pass the slot (hold lifted) and returns the gaps
        between one task's answer leaving the Worker and the next task arriving, in µs."""
        self.control("/reset")
        self.release()
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout and len(self.stats()["tasks"]) < want + 1:
            time.sleep(0.1)
        self.control("/hold")
        data = self.stats()
        t = sorted(data["tasks"])
        gaps = sorted((t[i + 1][0] - t[i][1]) / 1000 for i in range(len(t) - 1))
        return gaps, data["maxInFlight"]


def lb_pid(b, p):
    """andera-lb's own pid: p itself, or its child under a wrapper (heaptrack)."""
    want = os.path.realpath(b.lb_bin)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        for pid in tree(p.pid):
            try:
                if os.path.realpath(f"/proc/{pid}/exe") == want:
                    return pid
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"no {want} process under {p.pid}")


def settle_rss(b, pids):
    b.settle(pids, 20)
    return vm_kib(pids, "VmRSS")


def lb_point(b, w, n, handoffs):
    """One fill of n waiting tasks in a fresh andera-lb: KiB per waiting task, the
    hand-off median with the queue full, the time to empty when the clients leave,
    and a second burst's RSS."""
    p = b.start_lb([w.url], f"andera-lb-w{n}", max_queued=n + 1000)
    if b.wait_available(p, 1, 60)[0] is None:
        raise RuntimeError("andera-lb never saw the stub Worker available")
    b.wait_feeds(w.ws_port, 1, 30)
    pids = [lb_pid(b, p)]
    w.warm(b.port["lb"])
    rss0 = settle_rss(b, pids)
    qc = w.fill(b.port["lb"], n, f"qclient-w{n}")
    rss1 = settle_rss(b, pids)
    gaps, max_in = w.handoffs(handoffs)
    gone = w.leave(qc)
    w.release()
    h = b.lb_health()
    rss2 = settle_rss(b, pids)
    qc = w.fill(b.port["lb"], n, f"qclient-w{n}b")
    rss3 = settle_rss(b, pids)
    w.leave(qc)
    w.release()
    rss4 = settle_rss(b, pids)
    hwm = vm_kib(pids, "VmHWM")
    b.stop(p, timeout=60)
    depth_after = h["queue"]["depth"]
    return {
        "n": n, "kib": (rss1 - rss0) / n, "rss0": rss0, "rss1": rss1, "rss2": rss2,
        "rss3": rss3, "rss4": rss4, "hwm": hwm, "gaps": gaps, "max_in": max_in,
        "gone_s": gone, "fill_s": qc.fill_s, "depth_after": depth_after,
    }


def nginx_point(b, n):
    """nginx (b's configuration) proxying n requests that its upstream holds: the same
    stub Worker on hold, so every request waits inside nginx for its upstream."""
    w = Waiting(b)
    room = fd_room()
    cfg = b.render("nginx-wait.conf", "nginx-wait.conf", PORT=b.port["nginx"],
                   STUB_PORT=w.port, NOFILE=room, CONNS=room - 100)
    p = b.spawn("nginx-wait", ["nginx", "-p", b.tmp, "-c", cfg, "-e",
                               os.path.join(b.tmp, "nginx-wait.error.log")], cpu=PROXY_CPU)
    b.wait_port(b.port["nginx"], p)
    pids = tree(p.pid)
    w.warm(b.port["nginx"])
    rss0 = settle_rss(b, pids)
    w.control("/hold")
    out = os.path.join(b.tmp, "qclient-nginx.json")
    sources = max(1, -(-n // CONNS_PER_SOURCE))
    qc = b.spawn("qclient-nginx", [sys.executable, os.path.join(HERE, "qclient.py"), "--port",
                                   str(b.port["nginx"]), "--n", str(n), "--body", TASK_BODY,
                                   "--lb-key", LB_KEY, "--wk-key", WK_KEY, "--out", out,
                                   "--timeout", "3600", "--sources", str(sources)],
                 cpu=LOAD_CPU, stop_sig=signal.SIGKILL)
    # nginx holds every request on its own upstream connection: count them at the stub.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300 and qc.poll() is None:
        if w.stats()["maxInFlight"] >= n:
            break
        time.sleep(0.2)
    held = w.stats()["maxInFlight"]
    rss1 = settle_rss(b, pids)
    b.stop(qc)
    w.release()
    b.stop(p)
    b.stop(w.stub)
    return {"n": n, "held": held, "kib": (rss1 - rss0) / max(1, held), "rss0": rss0,
            "rss1": rss1}


def row(b):
    """Row w: KiB per waiting sync task at each of WAIT_SIZES, hand-off median with the
    queue full, the queue emptied when the clients leave, second-burst RSS; nginx
    holding 10,000 proxied requests for scale."""
    room = fd_room()
    w = Waiting(b)
    try:
        for n in WAIT_SIZES:
            # The client and andera-lb each need a descriptor per connection, plus some.
            if n + 1000 > room:
                note = (f"not measured: {n:,} connections need RLIMIT_NOFILE ≥ {n + 1000:,}, "
                        f"the hard limit here is {room:,} (raise it: LimitNOFILE, ulimits: "
                        "nofile, see README)")
                b.rows.append({"id": "w", "target": f"{n:,} waiting tasks", "notes": note})
                say(f"w {n}: {note}")
                continue
            r = lb_point(b, w, n, WAIT_HANDOFFS)
            g = r["gaps"]
            med = statistics.median(g) if g else float("nan")
            mib = lambda k: r[k] / 1024  # noqa: E731
            notes = (f"{r['kib']:.1f} KiB/waiting task (VmRSS {mib('rss0'):.1f} → {mib('rss1'):.1f} "
                     f"MiB at {n:,} waiting, filled in {r['fill_s']:.1f} s); hand-off with the "
                     f"queue full: median {med:.0f} µs, p99 {pct(g, 99):.0f} µs over {len(g)} "
                     f"(max in flight {r['max_in']}); clients left: queue empty in "
                     f"{r['gone_s']:.1f} s, VmRSS {mib('rss2'):.1f} MiB; second burst "
                     f"{mib('rss3'):.1f} MiB, after it {mib('rss4'):.1f} MiB (VmHWM "
                     f"{mib('hwm'):.1f})")
            b.rows.append({"id": "w", "target": f"{n:,} waiting tasks", "conc": n,
                           "rss": (r["rss1"] - r["rss0"]) / 1024, "notes": notes})
            say(f"w {n}: {notes}")
            b.targets.append((r["kib"] <= 8, f"a waiting sync task ≤ 8 KiB ({n:,} waiting)",
                              f"{r['kib']:.1f} KiB"))
            b.targets.append((med < 1000 and r["max_in"] <= 1,
                              f"hand-off median < 1 ms with {n:,} waiting",
                              f"median {med:.0f} µs"))
            b.targets.append((r["rss3"] <= r["rss1"] * 1.1,
                              f"second burst of {n:,} reuses the first's memory (≤ 1.1×)",
                              f"{mib('rss3'):.1f} / {mib('rss1'):.1f} MiB"))
    finally:
        b.stop(w.stub)
    # nginx holds two connections per request (client and upstream).
    n = min(10000, (room - 1000) // 2)
    r = nginx_point(b, n)
    notes = (f"{r['kib']:.1f} KiB per held request (VmRSS {r['rss0'] / 1024:.1f} → "
             f"{r['rss1'] / 1024:.1f} MiB, {r['held']:,} requests held by the upstream)")
    b.rows.append({"id": "w", "target": f"nginx, {n:,} requests to a slow upstream", "conc": n,
                   "rss": (r["rss1"] - r["rss0"]) / 1024, "notes": notes})
    say(f"w nginx: {notes}")
