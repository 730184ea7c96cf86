"""Row k of the benchmark: the cluster (cluster.redis, #26). Called by bench.py.

One redis-server and 1, 2, 3 andera-lb instances sharing it (and one instance without
a cluster, for comparison), each instance with its own wrk, twice per point:
- cost: in front of the nginx stub (100,000 slots: a slot is always free),
  BENCH_CLUSTER_TPUT_CONC (8) connections per instance;
- hand-off: in front of a 1-slot stub Worker (stubworker.py, tasks of
  BENCH_HANDOFF_MS), BENCH_CLUSTER_CONC (2) tasks outstanding per instance, so tasks
  always wait in the cluster's queue and every slot that frees is handed on through
  Redis.
Figures:
- Redis round trips per task: the instances' andera_lb_cluster_redis_calls_total,
  summed, ÷ tasks (per-task ops take/release/leave/pump, and with the periodic
  renew/inbox/status);
- CPU µs per task: utime+stime of every instance ÷ tasks (and a point without a
  cluster, one instance, for the difference);
- hand-off at the Worker: arrival(n+1) − sent(n) as in row g (the answer back
  through an instance, the lease returned, the next task granted, possibly on another
  instance, and sent);
- cross-instance hand-off: andera_lb_cluster_handoff_seconds (from the releasing
  instance's call to the grant read on another), median and p99 interpolated
  within its buckets.
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

SECONDS = 6
CONC = 2
TPUT_CONC = 8


def _env_int(name, default):
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


def _metrics(http_get, port):
    status, body = http_get(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return body.decode()


def _calls(text):
    """{op: count} of andera_lb_cluster_redis_calls_total."""
    out = {}
    for line in text.splitlines():
        if line.startswith("andera_lb_cluster_redis_calls_total{op=\""):
            op = line.split('"')[1]
            out[op] = float(line.rsplit(" ", 1)[1])
    return out


def _handoff_buckets(text):
    """[(le, cumulative count)] of andera_lb_cluster_handoff_seconds."""
    out = []
    for line in text.splitlines():
        if line.startswith("andera_lb_cluster_handoff_seconds_bucket{le=\""):
            le = line.split('"')[1]
            out.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return out


def _quantile(buckets, q):
    """The q-quantile of a cumulative histogram, linear within its bucket (seconds)."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return float("nan")
    rank, lo, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * ((rank - below) / max(count - below, 1e-9))
        lo, below = le, count
    return lo


def _redis(port, *args):
    """One Redis command over RESP; the first line of the answer."""
    cmd = f"*{len(args)}\r\n" + "".join(f"${len(str(a))}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(cmd.encode())
        return s.recv(4096).split(b"\r\n", 1)[0].decode()


def _sum_buckets(many):
    if not many:
        return []
    return [(le, sum(b[i][1] for b in many)) for i, (le, _) in enumerate(many[0])]


def run(b, g):
    """Adds row k to b.rows (g: bench.py's module, for its helpers and settings)."""
    if not shutil.which("redis-server"):
        b.rows.append({"id": "k", "target": "cluster", "notes": "redis-server not installed: skipped"})
        return
    seconds = _env_int("BENCH_CLUSTER_SECONDS", SECONDS)
    conc = _env_int("BENCH_CLUSTER_CONC", CONC)
    tput_conc = _env_int("BENCH_CLUSTER_TPUT_CONC", TPUT_CONC)
    ports = g.free_ports(2 + 2 + 2 * 3)
    rport, wport, wsport = ports[0], ports[1], ports[2]
    redis = b.spawn("redis", ["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", b.tmp],
                    cpu=g.LOAD_CPU)
    b.wait_port(rport, redis)
    stub = b.spawn("stubworker-k", [sys.executable, os.path.join(g.HERE, "stubworker.py"),
                                    "--port", str(wport), "--ws-port", str(wsport),
                                    "--key", g.LB_KEY, "--limit", "1",
                                    "--delay-ms", str(g.HANDOFF_MS)], cpu=g.LOAD_CPU)
    b.wait_port(wport, stub)
    b.wait_port(wsport, stub)
    url = f"redis://127.0.0.1:{rport}"
    worst_median = 0.0
    try:
        for n, clustered in [(1, False), (1, True), (2, True), (3, True)]:
            label = f"{n} instance{'s' if n > 1 else ''}" + ("" if clustered else ", no cluster")
            # Cost: the nginx stub (no slot ever short), BENCH_CLUSTER_TPUT_CONC per instance.
            lbs = _start(b, g, ports, n, clustered, url, f"http://127.0.0.1:{b.port['stub']}")
            r = _measure(b, g, lbs, tput_conc, seconds)
            for p, _, _ in lbs:
                b.stop(p, timeout=30)
            notes = f"{r['tasks']:,} tasks ({r['errors']} errors)"
            if clustered:
                notes = _trips(r) + "; " + notes
            b.rows.append({"id": "k", "target": f"cluster cost, {label}", "conc": tput_conc * n,
                           "rps": r["tasks"] / r["wall"], "cpu_us": r["cpu_us"], "notes": notes})
            g.say(f"k: cost, {label}: {r['cpu_us']:.0f} µs CPU/task; {notes}")
            # Hand-off: the 1-slot stub, tasks always waiting, slots handed on through Redis.
            lbs = _start(b, g, ports, n, clustered, url, f"http://127.0.0.1:{wport}")
            g.http_get(wport, "/reset", method="POST", body=b"")
            r = _measure(b, g, lbs, conc, seconds, handoff_port=wport)
            for p, _, _ in lbs:
                b.stop(p, timeout=30)
            gaps = r["gaps"]
            notes = (f"{r['tasks']} tasks ({r['errors']} errors), Worker gap median "
                     f"{statistics.median(gaps) if gaps else float('nan'):.0f} µs p99 "
                     f"{g.pct(gaps, 99):.0f} µs")
            if clustered:
                notes = _trips(r) + "; " + notes
                if r["cross"]:
                    worst_median = max(worst_median, r["med_x"])
                    notes += (f"; cross-instance hand-off median {r['med_x']:.0f} µs p99 "
                              f"{r['p99_x']:.0f} µs over {r['cross']:.0f} (histogram, interpolated)")
            if r["overlaps"]:
                notes += f"; WORKER OVERFILLED {r['overlaps']}× (max in flight {r['max_in']})"
            b.rows.append({"id": "k", "target": f"cluster hand-off, {label}", "conc": conc * n,
                           "cpu_us": r["cpu_us"], "notes": notes})
            g.say(f"k: hand-off, {label}: {notes}")
    finally:
        b.stop(stub)
        b.stop(redis)
    b.targets.append((worst_median < 2000, "cluster cross-instance hand-off median < 2 ms",
                      f"worst median {worst_median:.0f} µs"))


def _trips(r):
    calls, tasks = r["calls"], max(r["tasks"], 1)
    per_task = sum(calls.get(op, 0) for op in ("take", "release", "leave", "pump"))
    return (f"Redis round trips/task {per_task / tasks:.2f} (take {calls.get('take', 0) / tasks:.2f}, "
            f"release {calls.get('release', 0) / tasks:.2f}), {sum(calls.values()) / tasks:.2f} "
            f"with renew/inbox/status")


def _start(b, g, ports, n, clustered, url, worker):
    """n andera-lb instances in front of `worker` (sharing Redis at url if clustered),
    each ready: its Worker available and the cluster joined."""
    # Each point from an empty Redis: no lease of the last point's instances.
    _redis(int(url.rsplit(":", 1)[1]), "FLUSHALL")
    workers = b.write_workers([worker])
    lbs = []
    for i in range(n):
        port, admin = ports[4 + 2 * i], ports[5 + 2 * i]
        d = os.path.join(b.tmp, f"k{n}{i}")
        os.makedirs(d, exist_ok=True)
        cfg = b.render("andera-lb.yaml", f"k{n}{i}.yaml", PORT=port, ADMIN_PORT=admin,
                       LB_KEY=g.LB_KEY, WORKERS_FILE=workers, DISCOVERY_MS=600000,
                       HEARTBEAT_MS=600000, MAX_QUEUED=20000, DIR=d)
        if clustered:
            with open(cfg, "a") as f:
                f.write(f"cluster:\n  redis: \"{url}\"\n")
        env = {k: v for k, v in os.environ.items() if k not in g.LB_ENV}
        p = b.spawn(f"andera-lb-k{n}{i}", [b.lb_bin, "--config", cfg], cpu=g.PROXY_CPU,
                    env=env, stop_sig=signal.SIGINT)
        b.wait_port(port, p)
        lbs.append((p, port, admin))
    for p, port, admin in lbs:
        end = time.monotonic() + 60
        while True:
            s, body = g.http_get(port, "/health", {"x-lb-auth": g.LB_KEY})
            h = json.loads(body) if s == 200 else {}
            up = h.get("components", {}).get("discovery", {}).get("available", 0)
            cl = h.get("components", {}).get("cluster", {}).get("status")
            if up >= 1 and cl in ("ok", "off"):
                break
            if time.monotonic() > end:
                raise RuntimeError(f"k: instance on {port} not ready: {h}")
            time.sleep(0.1)
    return lbs


def _measure(b, g, lbs, conc, seconds, handoff_port=None):
    """A warm-up second, then `seconds` of wrk on every instance at once."""
    ports = [port for _, port, _ in lbs]
    _load(b, g, ports, conc, 1)
    if handoff_port:
        g.http_get(handoff_port, "/reset", method="POST", body=b"")
    pids = [pid for p, _, _ in lbs for pid in g.tree(p.pid)]
    c0, t0 = g.cpu_ticks(pids), time.monotonic()
    m0 = [_metrics(g.http_get, admin) for _, _, admin in lbs]
    tasks, errors = _load(b, g, ports, conc, seconds)
    c1, t1 = g.cpu_ticks(pids), time.monotonic()
    m1 = [_metrics(g.http_get, admin) for _, _, admin in lbs]
    calls = {}
    for before, after in zip(m0, m1):
        c_b, c_a = _calls(before), _calls(after)
        for op in c_a:
            calls[op] = calls.get(op, 0) + c_a[op] - c_b.get(op, 0)
    hist = _sum_buckets([
        [(le, a - bb) for (le, a), (_, bb) in zip(_handoff_buckets(after), _handoff_buckets(before))]
        for before, after in zip(m0, m1)])
    r = {"tasks": tasks, "errors": errors, "wall": t1 - t0, "calls": calls,
         "cpu_us": (c1 - c0) / g.HZ * 1e6 / tasks if tasks else float("nan"),
         "cross": hist[-1][1] if hist else 0,
         "med_x": _quantile(hist, 0.5) * 1e6, "p99_x": _quantile(hist, 0.99) * 1e6,
         "gaps": [], "overlaps": 0, "max_in": 0}
    if handoff_port:
        data = json.loads(g.http_get(handoff_port, "/stats")[1])
        t = sorted(data["tasks"])[2:]
        gaps = sorted((t[i + 1][0] - t[i][1]) / 1000 for i in range(len(t) - 1))
        r["overlaps"] = sum(1 for x in gaps if x < 0)
        r["gaps"] = [x for x in gaps if x >= 0]
        r["max_in"] = data["maxInFlight"]
    return r


def _load(b, g, ports, conc, seconds):
    """wrk on every port at once, `conc` connections each; (requests, errors)."""
    env = dict(os.environ, BENCH_LB_KEY=g.LB_KEY, BENCH_WK_KEY=g.WK_KEY, BENCH_BODY=g.TASK_BODY)
    procs = []
    for port in ports:
        out = open(os.path.join(b.tmp, f"wrk-k-{port}.out"), "w+b")
        argv = ["wrk", "-t1", f"-c{conc}", f"-d{int(seconds)}s", "--timeout", "10s",
                "-s", os.path.join(g.CONF, "post.lua"), f"http://127.0.0.1:{port}/task"]
        p = subprocess.Popen(b.pinned(argv, g.LOAD_CPU), stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, preexec_fn=g.default_signals)
        b.record(p.pid)
        procs.append((p, out))
    requests = errors = 0
    for p, out in procs:
        p.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
        out.close()
        line = next((l for l in text.splitlines() if l.startswith("BENCHJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk produced no result:\n{text[-2000:]}")
        r = json.loads(line[len("BENCHJSON "):])
        requests += r["requests"]
        errors += sum(r[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    return requests, errors
