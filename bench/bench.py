#!/usr/bin/env python3
"""Orchestrates the andera-lb benchmark (called by bench/run). Standard library only.

Progress goes to stderr; the one result table goes to stdout. Every process this
script starts is recorded in <tmp>/pids (bench/run's trap kills leftovers by id).
See bench/README.md for what is measured and how.
"""

import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONF = os.path.join(HERE, "conf")
HZ = os.sysconf("SC_CLK_TCK")
PAGE_KIB = 1024


def env_num(name, default, cast=float):
    v = os.environ.get(name, "").strip()
    return cast(v) if v else default


def env_list(name, default):
    v = os.environ.get(name, "").strip()
    return [int(x) for x in v.replace(",", " ").split()] if v else default


DURATION = max(1, int(env_num("BENCH_DURATION", 10)))
WARMUP = max(0, int(env_num("BENCH_WARMUP", 2)))
CONCS = env_list("BENCH_CONCURRENCY", [16, 64])
SELECT_WORKERS = env_list("BENCH_WORKERS", [10, 1000, 10000])
SELECT_CONC = int(env_num("BENCH_SELECT_CONCURRENCY", 64))
REG_TIMEOUT = env_num("BENCH_REGISTRATION_TIMEOUT", 300)
QUEUE_TASKS = int(env_num("BENCH_QUEUE_TASKS", 10000))
QUEUE_TASK_MS = int(env_num("BENCH_QUEUE_TASK_MS", 50))
DRAIN_SLOTS = int(env_num("BENCH_DRAIN_SLOTS", 1000))
HANDOFF_TASKS = int(env_num("BENCH_HANDOFF_TASKS", 300))
HANDOFF_MS = env_num("BENCH_HANDOFF_MS", 20)
STUB_LIMIT = int(env_num("BENCH_STUB_SLOTS", 100000))
IDLE_CONNS = int(env_num("BENCH_IDLE_CONNS", 2000))
# Sections whose proxy is profiled with perf after its measured points, e.g. "pd".
PERF = os.environ.get("BENCH_PERF", "").lower()
PERF_TOP = int(env_num("BENCH_PERF_TOP", 10))
# Rounds of the interleaved b/c/p/d points; rows are medians.
REPEAT = max(1, int(env_num("BENCH_REPEAT", 3)))
FLOOR_TARGET = 1.1
IDLE_TARGET_KIB = 16
ONLY = os.environ.get("BENCH_ONLY", "abcpdtefgwivsk").lower()
# Seconds of load per target in (v), counted under callgrind.
VALGRIND_SECONDS = int(env_num("BENCH_VALGRIND_SECONDS", 8))
# BENCH_CACHE_SIM=1: (v) also simulates the caches (callgrind --cache-sim=yes; slower);
# the misses are in the kept callgrind files (BENCH_KEEP_TMP=1).
CACHE_SIM = os.environ.get("BENCH_CACHE_SIM", "") not in ("", "0")
# Seconds of load per target in (s), counted under strace.
STRACE_SECONDS = int(env_num("BENCH_STRACE_SECONDS", 5))
NCPU = os.cpu_count() or 1
PIN = NCPU >= 2 and os.environ.get("BENCH_NO_PIN", "") == ""
PROXY_CPU = int(env_num("BENCH_PROXY_CPU", 0))
LOAD_CPU = int(env_num("BENCH_LOAD_CPU", 1 if NCPU >= 2 else 0))
LB_KEY = "bench-lb-key-" + os.urandom(4).hex()
WK_KEY = "bench-worker-key"
TASK_BODY = '{"group":"default","function":"hello","contract":1,"input":{}}'
SLEEP_BODY = '{"group":"default","function":"sleep","contract":1,"input":{"ms":%d}}'

# Environment variables andera-lb reads: never inherited from the caller.
LB_ENV = [
    "PORT", "ADMIN_PORT", "LB_AUTH_KEY", "WORKERS_FILE", "WORKER_DISCOVERY_INTERVAL",
    "WORKER_DISCOVERY_TIMEOUT", "WORKER_DISCOVERY_RETRIES", "WS_HEARTBEAT_INTERVAL",
    "WS_HEARTBEAT_TIMEOUT", "DASHBOARD_ENABLED", "BULL_BOARD_ENABLED", "LOG_LEVEL", "MAX_LOGS",
    "TASK_TIMEOUT", "TASK_ATTEMPTS", "REQUEST_BODY_LIMIT", "MAX_QUEUED_TASKS", "REDIS_HOST",
    "REDIS_PORT",
]


def say(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc helpers

def _stat_fields(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def cpu_ticks(pids):
    """utime+stime (clock ticks) summed over pids (all threads of each process)."""
    total = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f:
            total += int(f[11]) + int(f[12])
    return total


def cpu_split(pids):
    """(utime, stime) clock ticks summed over pids."""
    user = system = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f:
            user += int(f[11])
            system += int(f[12])
    return user, system


def cpu_times():
    """{cpu index: (busy ticks, total ticks, steal ticks)} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *v = line.split()
                v = [int(x) for x in v] + [0] * 10
                total = sum(v[:8])
                out[int(name[3:])] = (total - v[3] - v[4], total, v[7])
    return out


def busy_pct(t0, t1, cpu):
    """Share of a CPU that was busy (anything but idle/iowait, softirq and steal included)."""
    if cpu not in t0 or cpu not in t1:
        return float("nan")
    busy = t1[cpu][0] - t0[cpu][0]
    total = t1[cpu][1] - t0[cpu][1]
    return 100.0 * busy / total if total else float("nan")


def tree(pid):
    """pid and all its descendants."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = _stat_fields(d)
            if f:
                parents.setdefault(int(f[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def vm_kib(pids, key):
    """Sum of a /proc/<pid>/status field (VmHWM, VmRSS) in KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def default_signals():
    """In a child before exec: undo the orchestrator's signal dispositions."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def http_get(port, path, headers=None, timeout=30, method="GET", body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def read_answer(sock):
    """Reads one HTTP/1.1 answer framed by Content-Length; returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed before the answer: {data[:200]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(l.split(":", 1)[1]) for l in lines[1:]
                   if l.lower().startswith("content-length:")), None)
    if length is None:
        raise RuntimeError(f"answer without Content-Length: {head[:200]!r}")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed inside the answer body")
        rest += chunk
    return int(lines[0].split()[1])


def pct(values, p):
    """Nearest-rank percentile of a sorted list."""
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1))
    return values[k]


# ---------------------------------------------------------------- the runner

class Bench:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.rows = []      # result table rows
        self.targets = []   # (ok: bool|None, requirement, measured)
        self.notes = []
        self.perf = []      # (point, top perf lines) when BENCH_PERF is set
        p = free_ports(16)
        self.port = dict(zip(
            ["stub", "wsfeed", "nginx", "haproxy", "lb", "lb_admin", "simA", "simA_ws",
             "simB", "simB_ws", "g", "g_ws", "floor", "spare2", "spare3", "spare4"], p))
        self.lb_bin = os.environ.get("LB_BIN", os.path.join(ROOT, "target/profiling/andera-lb"))
        self.sim_bin = os.environ.get("SIM_BIN", os.path.join(ROOT, "target/profiling/andera-worker-sim"))
        self.floor_bin = os.environ.get("FLOOR_BIN",
                                        os.path.join(ROOT, "target/profiling/andera-pingora-floor"))

    # -- processes
    def pinned(self, argv, cpu):
        return (["taskset", "-c", str(cpu)] + argv) if PIN and cpu is not None else argv

    def record(self, pid):
        with open(os.path.join(self.tmp, "pids"), "a") as f:
            f.write(f"{pid}\n")

    def spawn(self, name, argv, cpu=None, env=None, stop_sig=signal.SIGTERM):
        log = open(os.path.join(self.tmp, f"{name}.log"), "ab")
        p = subprocess.Popen(self.pinned(argv, cpu), stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, preexec_fn=default_signals)
        p.bench_name, p.stop_sig, p.log = name, stop_sig, log.name
        self.procs.append(p)
        self.record(p.pid)
        return p

    def stop(self, p, timeout=15):
        if p.poll() is None:
            family = tree(p.pid)
            try:
                p.send_signal(p.stop_sig)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for pid in family[1:]:  # e.g. nginx workers of a killed master
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(reversed(self.procs)):
            try:
                self.stop(p, timeout=5)
            except Exception as e:  # noqa: BLE001
                say(f"could not stop {p.bench_name}: {e}")

    def log_tail(self, p, n=15):
        try:
            with open(p.log, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def wait_port(self, port, p, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"{p.bench_name} exited ({p.returncode}):\n{self.log_tail(p)}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"port {port} not listening after {timeout}s")

    def render(self, template, out_name, **values):
        with open(os.path.join(CONF, template)) as f:
            text = f.read()
        values.setdefault("DIR", self.tmp)
        for k, v in values.items():
            text = text.replace(f"@@{k}@@", str(v))
        path = os.path.join(self.tmp, out_name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # -- load generation
    def wrk(self, port, conc, duration, cpu, body=TASK_BODY, path="/task"):
        env = dict(os.environ, BENCH_LB_KEY=LB_KEY, BENCH_WK_KEY=WK_KEY, BENCH_BODY=body)
        out = os.path.join(self.tmp, "wrk.out")
        argv = ["wrk", "-t1", f"-c{conc}", f"-d{int(duration)}s", "--timeout", "10s",
                "-s", os.path.join(CONF, "post.lua"), f"http://127.0.0.1:{port}{path}"]
        with open(out, "wb") as f:
            t0 = time.monotonic()
            p = subprocess.Popen(self.pinned(argv, cpu), stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, preexec_fn=default_signals)
            self.record(p.pid)
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            wall = time.monotonic() - t0
        with open(out) as f:
            text = f.read()
        line = next((l for l in text.splitlines() if l.startswith("BENCHJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk produced no result:\n{text[-2000:]}")
        r = json.loads(line[len("BENCHJSON "):])
        r["wall"] = wall
        r["cpu_s"] = ru.ru_utime + ru.ru_stime
        r["errors"] = sum(r[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
        return r

    def point(self, section, label, port, conc, proxy_pids, wrk_cpu, note="", keep=True,
              profile=True):
        if WARMUP:
            self.wrk(port, conc, WARMUP, wrk_cpu)
        stub = tree(self.stub.pid)
        proxy_pids = proxy_pids or []
        u0 = cpu_split(proxy_pids)
        c0, s0, t0, k0 = cpu_ticks(proxy_pids), cpu_ticks(stub), time.monotonic(), cpu_times()
        r = self.wrk(port, conc, DURATION, wrk_cpu)
        c1, s1, t1, k1 = cpu_ticks(proxy_pids), cpu_ticks(stub), time.monotonic(), cpu_times()
        u1 = cpu_split(proxy_pids)
        n = max(1, r["requests"])
        row = {
            "id": section, "target": label, "conc": conc,
            "rps": r["requests"] / (r["duration_us"] / 1e6),
            "p50": r["p50_us"] / 1000, "p99": r["p99_us"] / 1000,
            "cpu_us": (c1 - c0) / HZ * 1e6 / n if proxy_pids else None,
            "cpu_pct": (c1 - c0) / HZ / (t1 - t0) * 100 if proxy_pids else None,
            "stub_us": (s1 - s0) / HZ * 1e6 / n,
            "wrk_pct": r["cpu_s"] / r["wall"] * 100,
            "errors": r["errors"], "requests": r["requests"], "rss": None,
        }
        notes = [f"stub {row['stub_us']:.0f} µs/req", f"wrk CPU {row['wrk_pct']:.0f}%"]
        if proxy_pids:
            notes.insert(0, f"user/sys {(u1[0] - u0[0]) / HZ * 1e6 / n:.1f}/"
                            f"{(u1[1] - u0[1]) / HZ * 1e6 / n:.1f} µs/req")
        if PIN:
            notes.append(f"CPU{PROXY_CPU}/CPU{LOAD_CPU} busy {busy_pct(k0, k1, PROXY_CPU):.0f}/"
                         f"{busy_pct(k0, k1, LOAD_CPU):.0f}%")
            steal = sum(k1[c][2] - k0[c][2] for c in k1 if c in k0)
            total = sum(k1[c][1] - k0[c][1] for c in k1 if c in k0)
            if total and steal / total > 0.01:
                notes.append(f"steal {100 * steal / total:.0f}%")
        if r["errors"]:
            notes.append(f"ERRORS {r['errors']} (non-2xx {r['err_status']})")
        if note:
            notes.insert(0, note)
        row["notes"] = ", ".join(notes)
        if keep:
            self.rows.append(row)
        if section in PERF and proxy_pids and profile:
            self.profile(section, label, port, conc, proxy_pids, wrk_cpu)
        say(f"{section} {label} c={conc}: {row['rps']:.0f} req/s p50 {row['p50']:.2f} ms "
            f"p99 {row['p99']:.2f} ms" + (f" {row['cpu_us']:.1f} µs/req CPU {row['cpu_pct']:.0f}%"
                                          if proxy_pids else "") + f" ({row['notes']})")
        return row

    def profile(self, section, label, port, conc, pids, wrk_cpu):
        """A second run of the point under `perf record` (not the measured one: sampling
        costs CPU); its top symbols by self time go below the table."""
        data = os.path.join(self.tmp, f"perf-{section}-{conc}.data")
        rec = subprocess.Popen(["perf", "record", "-q", "-F", "1999", "-g", "-o", data, "-p",
                                ",".join(str(p) for p in pids)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, preexec_fn=default_signals)
        self.record(rec.pid)
        time.sleep(0.5)
        self.wrk(port, conc, DURATION, wrk_cpu)
        rec.send_signal(signal.SIGINT)
        rec.wait(60)
        out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                              "--sort", "symbol", "-F", "overhead,sym", "-g", "none",
                              "--percent-limit", "0.3"],
                             capture_output=True, text=True).stdout
        top = []
        for line in out.splitlines():
            fields = line.split()
            if fields and fields[0].endswith("%") and not line.startswith("#"):
                # "12.3% [k] symbol - -": the share, then the symbol without perf's fillers.
                top.append((float(fields[0][:-1]), " ".join(f for f in fields if f != "-")))
        top = [text for _, text in sorted(top, reverse=True)]
        self.perf.append((f"{section} {label}, c={conc}", top[:PERF_TOP]))

    # -- andera-lb
    def write_workers(self, urls):
        path = os.path.join(self.tmp, "workers.json")
        tmp = path + ".new"
        with open(tmp, "w") as f:
            json.dump(urls, f)
        os.replace(tmp, path)
        return path

    def start_lb(self, urls, name, discovery_ms=600000, heartbeat_ms=600000, max_queued=20000):
        workers = self.write_workers(urls)
        cfg = self.render("andera-lb.yaml", f"{name}.yaml", PORT=self.port["lb"],
                          ADMIN_PORT=self.port["lb_admin"], LB_KEY=LB_KEY, WORKERS_FILE=workers,
                          DISCOVERY_MS=discovery_ms, HEARTBEAT_MS=heartbeat_ms, MAX_QUEUED=max_queued)
        env = {k: v for k, v in os.environ.items() if k not in LB_ENV}
        env["MAX_QUEUED_TASKS"] = str(max_queued)
        p = self.spawn(name, [self.lb_bin, "--config", cfg], cpu=PROXY_CPU, env=env,
                       stop_sig=signal.SIGINT)
        self.wait_port(self.port["lb"], p)
        return p

    def lb_health(self, timeout=60):
        status, body = http_get(self.port["lb"], "/health", {"x-lb-auth": LB_KEY}, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"andera-lb /health answered {status}")
        return json.loads(body)

    def wait_available(self, p, n, timeout):
        """Seconds until authenticated /health reports n Workers available, or None."""
        t0 = time.monotonic()
        last = 0
        while time.monotonic() - t0 < timeout:
            if p.poll() is not None:
                raise RuntimeError(f"andera-lb exited ({p.returncode}):\n{self.log_tail(p)}")
            q0 = time.monotonic()
            try:
                h = self.lb_health()
                # Keyed /health keeps the LB's own components under "components"
                # ("services" holds the original's strings).
                last = h["components"]["discovery"]["available"]
                if last >= n:
                    return time.monotonic() - t0, last
            except (OSError, ValueError, KeyError, http.client.HTTPException):
                pass
            # Big answers (10,000 Workers) cost the LB CPU: poll less often then.
            time.sleep(max(0.05, 4 * (time.monotonic() - q0)))
        return None, last

    def feed_stats(self, port):
        try:
            return json.loads(http_get(port, "/stats", timeout=10)[1])
        except (OSError, ValueError, http.client.HTTPException):
            return {}

    def wait_feeds(self, port, n, timeout=120):
        """Waits until n feeds are open on a wsfeed server and no ping arrived for 1 s."""
        end = time.monotonic() + timeout
        last_pings = -1
        while time.monotonic() < end:
            s = self.feed_stats(port)
            if s.get("open", 0) >= n and s.get("pings") == last_pings:
                return True
            last_pings = s.get("pings", -1)
            time.sleep(1)
        return False

    def wait_feeds_closed(self, port, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.feed_stats(port).get("open", 0) > 0:
            time.sleep(0.2)

    def settle(self, pids, max_wait=60, idle_share=0.03):
        """Waits until pids use less than idle_share of a CPU over a second."""
        end = time.monotonic() + max_wait
        while time.monotonic() < end:
            c0 = cpu_ticks(pids)
            time.sleep(1)
            if (cpu_ticks(pids) - c0) / HZ < idle_share:
                return True
        return False

    # ------------------------------------------------------------ sections
    def start_stub(self):
        health = json.dumps({
            "status": "ready", "group": "default", "contract": 1,
            "websocketPort": self.port["wsfeed"],
            "functions": [{"name": "hello", "params": {}}],
            "services": [], "tags": {},
            "slots": {"used": 0, "available": STUB_LIMIT, "limit": STUB_LIMIT, "queue": 0},
            "system": {"uptime": 1, "usedMemoryPercent": 0, "cpuLoad": 0},
        }, separators=(",", ":"))
        cfg = self.render("nginx-stub.conf", "nginx-stub.conf", PORT=self.port["stub"],
                          LB_KEY=LB_KEY, HEALTH_JSON=health)
        self.stub = self.spawn("nginx-stub", ["nginx", "-p", self.tmp, "-c", cfg, "-e",
                                              os.path.join(self.tmp, "nginx-stub.error.log")],
                               cpu=LOAD_CPU)
        self.wait_port(self.port["stub"], self.stub)
        self.feed = self.spawn("wsfeed", [sys.executable, os.path.join(HERE, "wsfeed.py"),
                                          "--port", str(self.port["wsfeed"]), "--key", LB_KEY,
                                          "--limit", str(STUB_LIMIT)], cpu=LOAD_CPU)
        self.wait_port(self.port["wsfeed"], self.feed)
        st, body = http_get(self.port["stub"], "/health", {"x-lb-auth": LB_KEY})
        assert st == 200 and json.loads(body)["group"] == "default", body
        st, body = http_get(self.port["stub"], "/w17/task", method="POST", body=TASK_BODY)
        assert st == 200 and b"Hello Andera!" in body, body

    def start_nginx_proxy(self):
        cfg = self.render("nginx-proxy.conf", "nginx-proxy.conf", PORT=self.port["nginx"],
                          STUB_PORT=self.port["stub"])
        p = self.spawn("nginx-proxy", ["nginx", "-p", self.tmp, "-c", cfg, "-e",
                                       os.path.join(self.tmp, "nginx-proxy.error.log")],
                       cpu=PROXY_CPU)
        self.wait_port(self.port["nginx"], p)
        time.sleep(0.3)
        return p

    def start_floor(self):
        """The framework's floor: a bare Pingora ProxyHttp (bench/floor), 2 threads on
        the same single proxy CPU."""
        p = self.spawn("pingora-floor", [self.floor_bin, "--listen",
                                         f"127.0.0.1:{self.port['floor']}", "--upstream",
                                         f"127.0.0.1:{self.port['stub']}", "--lb-key", LB_KEY,
                                         "--threads", "2"], cpu=PROXY_CPU)
        self.wait_port(self.port["floor"], p)
        return p

    def start_lb_on_stub(self, name):
        """andera-lb with the stub as its one Worker, once the Worker and its feed are up."""
        p = self.start_lb([f"http://127.0.0.1:{self.port['stub']}"], name)
        reg, _ = self.wait_available(p, 1, 60)
        if reg is None:
            raise RuntimeError("andera-lb never saw the stub Worker available")
        self.wait_feeds(self.port["wsfeed"], 1, 30)
        return p

    def throughput(self):
        """(a)-(d): the same stub, direct and behind each proxy."""
        by = {}
        if "a" in ONLY:
            # Direct: wrk gets the otherwise idle proxy CPU so that it is not the bottleneck.
            by["a"] = [self.point("a", "stub direct (nginx)", self.port["stub"], c, None,
                                  PROXY_CPU if PIN else None) for c in CONCS]
        # b, c, p and d run side by side, interleaved round by round, so that a slow
        # spell of this shared machine hits every proxy alike; each row is the median
        # of REPEAT rounds and each ratio the median of the per-round ratios.
        proxies = []
        if "b" in ONLY:
            proxies.append(("b", "nginx proxy_pass", self.start_nginx_proxy(), self.port["nginx"]))
        if "c" in ONLY:
            cfg = self.render("haproxy.cfg", "haproxy.cfg", PORT=self.port["haproxy"],
                              STUB_PORT=self.port["stub"])
            p = self.spawn("haproxy", ["haproxy", "-db", "-f", cfg], cpu=PROXY_CPU)
            self.wait_port(self.port["haproxy"], p)
            proxies.append(("c", "haproxy http", p, self.port["haproxy"]))
        if "p" in ONLY:
            proxies.append(("p", "Pingora floor (bare ProxyHttp)", self.start_floor(),
                            self.port["floor"]))
        if "d" in ONLY:
            proxies.append(("d", "andera-lb", self.start_lb_on_stub("andera-lb-d"),
                            self.port["lb"]))
        pids = {key: tree(p.pid) for key, _, p, _ in proxies}
        for key in pids:
            self.settle(pids[key], 10)
        runs = {(key, c): [] for key, _, _, _ in proxies for c in CONCS}
        for rnd in range(REPEAT):
            for c in CONCS:
                for key, label, _, port in proxies:
                    runs[(key, c)].append(self.point(key, label, port, c, pids[key], LOAD_CPU,
                                                     keep=False, profile=rnd == 0))
        for key, label, p, _ in proxies:
            by[key] = [self.median_row(runs[(key, c)]) for c in CONCS]
            self.rows.extend(by[key])
            self.set_rss(by[key], pids[key])
        for _, _, p, _ in proxies:
            self.stop(p)
        if "d" in ONLY:
            self.wait_feeds_closed(self.port["wsfeed"])
        for base, label in (("b", "nginx"), ("p", "Pingora floor")):
            if base not in by or "d" not in by:
                continue
            for c in CONCS:
                pairs = list(zip(runs[(base, c)], runs[("d", c)]))
                ratio = lambda k: statistics.median(rd[k] / rb[k] for rb, rd in pairs)  # noqa: E731
                cpu = sorted(rd["cpu_us"] / rb["cpu_us"] for rb, rd in pairs)
                self.rows.append({
                    "id": f"d/{base}", "target": f"andera-lb ÷ {label}", "conc": c,
                    "rps": ratio("rps"), "p50": ratio("p50"), "p99": ratio("p99"),
                    "cpu_us": ratio("cpu_us"), "cpu_pct": None,
                    "rss": by["d"][0]["rss"] / by[base][0]["rss"], "ratio": True,
                    "notes": "medians of per-round ratios" + (
                        f"; CPU ratio per round {', '.join(f'{x:.2f}' for x in cpu)}"
                        if len(cpu) > 1 else ""),
                })
        ratio_rows = {(r["id"], r["conc"]): r for r in self.rows if r.get("ratio")}
        fmt = lambda xs: ", ".join(f"c={c}: {x:.2f}×" for c, x in xs)  # noqa: E731
        if "b" in by and "d" in by:
            rows = [ratio_rows[("d/b", c)] for c in CONCS]
            cpu = [(r["conc"], r["cpu_us"]) for r in rows]
            thr = [(r["conc"], r["rps"]) for r in rows]
            p99 = [(r["conc"], r["p99"]) for r in rows]
            self.targets.append((all(x <= 1.2 for _, x in cpu), "andera-lb CPU/task ≤ 1.2 × nginx", fmt(cpu)))
            self.targets.append((all(x >= 0.9 for _, x in thr), "andera-lb throughput ≥ 0.9 × nginx", fmt(thr)))
            self.targets.append((all(x <= 1.5 for _, x in p99), "andera-lb p99 ≤ 1.5 × nginx", fmt(p99)))
        if "p" in by and "d" in by:
            cpu = [(c, ratio_rows[("d/p", c)]["cpu_us"]) for c in CONCS]
            self.targets.append((all(x <= FLOOR_TARGET for _, x in cpu),
                                 f"andera-lb CPU/task ≤ {FLOOR_TARGET} × Pingora floor", fmt(cpu)))

    def median_row(self, runs):
        """One row for REPEAT runs of a point: medians, and the notes of the median run."""
        if len(runs) == 1:
            return runs[0]
        mid = sorted(runs, key=lambda r: r["cpu_us"])[len(runs) // 2]
        row = dict(mid)
        for k in ("rps", "p50", "p99", "cpu_us", "cpu_pct"):
            row[k] = statistics.median(r[k] for r in runs)
        cpus = sorted(r["cpu_us"] for r in runs)
        row["notes"] = (f"median of {len(runs)}, CPU µs/req {cpus[0]:.1f}–{cpus[-1]:.1f}; "
                        + mid["notes"])
        return row

    def idle(self):
        """(i): RSS per idle client connection, for nginx, the Pingora floor and andera-lb:
        IDLE_CONNS connections opened and silent, then the same connections kept alive
        after one task each (sent one connection at a time, so that no peak of requests
        in flight is charged to the idle state)."""
        task = (f"POST /task HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {LB_KEY}\r\n"
                f"x-wr-auth: {WK_KEY}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(TASK_BODY)}\r\n\r\n{TASK_BODY}").encode()
        kib = {}
        for key, label, start, port in (
                ("b", "nginx", self.start_nginx_proxy, self.port["nginx"]),
                ("p", "Pingora floor", self.start_floor, self.port["floor"]),
                ("d", "andera-lb", lambda: self.start_lb_on_stub("andera-lb-i"), self.port["lb"])):
            p = start()
            pids = tree(p.pid)
            # Warm-up: one-time allocations (upstream pool, first task) are not per connection.
            warm = socket.create_connection(("127.0.0.1", port), timeout=30)
            for _ in range(50):
                warm.sendall(task)
                read_answer(warm)
            warm.close()
            self.settle(pids, 10)
            rss0 = vm_kib(pids, "VmRSS")
            socks = []
            try:
                for _ in range(IDLE_CONNS):
                    socks.append(socket.create_connection(("127.0.0.1", port), timeout=30))
                time.sleep(1)
                self.settle(pids, 10)
                opened = (vm_kib(pids, "VmRSS") - rss0) / IDLE_CONNS
                statuses = {}
                for sock in socks:
                    st = read_answer(sock) if sock.sendall(task) is None else None
                    statuses[st] = statuses.get(st, 0) + 1
                time.sleep(1)
                self.settle(pids, 10)
                kept = (vm_kib(pids, "VmRSS") - rss0) / IDLE_CONNS
            finally:
                for sock in socks:
                    sock.close()
            self.stop(p, timeout=30)
            if key == "d":
                self.wait_feeds_closed(self.port["wsfeed"])
            kib[key] = max(opened, kept)
            notes = (f"{opened:.1f} KiB/conn opened and silent, {kept:.1f} KiB/conn kept alive "
                     f"after one task; VmRSS before {rss0 / 1024:.1f} MiB; answers "
                     + ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items())))
            self.rows.append({"id": "i", "target": f"{label}, {IDLE_CONNS:,} idle connections",
                              "conc": IDLE_CONNS, "idle_kib": kib[key], "notes": notes})
            say(f"i {label}: {notes}")
        for base, label in (("b", "nginx"), ("p", "Pingora floor")):
            self.rows.append({"id": f"i/{base}", "target": f"andera-lb ÷ {label}",
                              "idle_kib": kib["d"] / max(kib[base], 0.1), "ratio": True,
                              "notes": "ratio"})
        self.targets.append((kib["d"] <= IDLE_TARGET_KIB,
                             f"andera-lb idle client connection ≤ {IDLE_TARGET_KIB} KiB",
                             f"{kib['d']:.1f} KiB (the larger of opened and kept alive)"))

    def spawn_pd(self, key, prefix, name):
        """Starts the Pingora floor (key "p") or andera-lb ("d") with the stub as its one
        upstream, under the command `prefix` (a tracer, or nothing); returns (process,
        port) once it serves."""
        if key == "p":
            argv = [self.floor_bin, "--listen", f"127.0.0.1:{self.port['floor']}",
                    "--upstream", f"127.0.0.1:{self.port['stub']}", "--lb-key", LB_KEY,
                    "--threads", "2"]
            port = self.port["floor"]
        else:
            workers = self.write_workers([f"http://127.0.0.1:{self.port['stub']}"])
            cfg = self.render("andera-lb.yaml", f"{name}.yaml", PORT=self.port["lb"],
                              ADMIN_PORT=self.port["lb_admin"], LB_KEY=LB_KEY,
                              WORKERS_FILE=workers, DISCOVERY_MS=600000,
                              HEARTBEAT_MS=600000, MAX_QUEUED=20000)
            argv = [self.lb_bin, "--config", cfg]
            port = self.port["lb"]
        env = {k: v for k, v in os.environ.items() if k not in LB_ENV}
        p = self.spawn(name, prefix + argv, cpu=PROXY_CPU, env=env, stop_sig=signal.SIGINT)
        self.wait_port(port, p, timeout=120)
        if key == "d":
            self.wait_available(p, 1, 120)
        return p, port

    def stop_pd(self, key, p):
        self.stop(p, timeout=60)
        if key == "d":
            self.wait_feeds_closed(self.port["wsfeed"])

    def instructions(self):
        """(v): user-space instructions per task under callgrind, Pingora floor and
        andera-lb, at concurrency 16: a count, not a time, so the same binaries give the
        same figure whatever else this shared machine does (the kernel's share, about
        a third of the CPU time in p and d, is not counted)."""
        counts = {}
        for key, label in (("p", "Pingora floor"), ("d", "andera-lb")):
            out = os.path.join(self.tmp, f"callgrind-{key}.out")
            prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                      f"--callgrind-out-file={out}"] + (["--cache-sim=yes"] if CACHE_SIM else [])
            p, port = self.spawn_pd(key, prefix, f"callgrind-{key}")
            self.wrk(port, 16, 3, LOAD_CPU)
            ctl = lambda *a: subprocess.run(["callgrind_control", *a, str(p.pid)],  # noqa: E731
                                            capture_output=True, check=True)
            ctl("-i", "on")
            ctl("-z")
            r = self.wrk(port, 16, VALGRIND_SECONDS, LOAD_CPU)
            ctl("-d")
            ctl("-i", "off")
            self.stop_pd(key, p)
            dumps = sorted(f for f in os.listdir(self.tmp)
                           if f.startswith(f"callgrind-{key}.out") and f != f"callgrind-{key}.out")
            total = 0
            for name in dumps:
                with open(os.path.join(self.tmp, name)) as f:
                    for line in f:
                        if line.startswith("totals:") or line.startswith("summary:"):
                            total = max(total, int(line.split()[1]))
            n = max(1, r["requests"])
            counts[key] = total / n
            self.rows.append({"id": "v", "target": f"{label}, user instructions per task",
                              "conc": 16, "instr": counts[key],
                              "notes": f"callgrind, {r['requests']:,} tasks in {VALGRIND_SECONDS} s"})
            say(f"v {label}: {counts[key]:,.0f} instructions per task over {r['requests']} tasks")
        if counts.get("p") and counts.get("d"):
            self.rows.append({"id": "v/p", "target": "andera-lb ÷ Pingora floor", "conc": 16,
                              "instr": counts["d"] / counts["p"], "ratio": True,
                              "notes": "ratio of instruction counts"})

    def syscalls(self):
        """(s): system calls per task under strace, Pingora floor and andera-lb, at
        concurrency 16, by name: the kernel's share of the cost, which (v) leaves out.
        strace attaches to every thread after the warm-up, so start-up is not counted."""
        per_task = {}
        for key, label in (("p", "Pingora floor"), ("d", "andera-lb")):
            p, port = self.spawn_pd(key, [], f"strace-{key}")
            self.wrk(port, 16, 2, LOAD_CPU)
            out = os.path.join(self.tmp, f"strace-{key}.txt")
            tids = sorted(os.listdir(f"/proc/{p.pid}/task"))
            tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out]
                                      + [a for t in tids for a in ("-p", t)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      preexec_fn=default_signals)
            self.record(tracer.pid)
            time.sleep(1)
            r = self.wrk(port, 16, STRACE_SECONDS, LOAD_CPU)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=60)
            self.stop_pd(key, p)
            calls = {}
            with open(out) as f:
                for line in f:
                    cols = line.split()
                    # "% time seconds usecs/call calls [errors] syscall"
                    if len(cols) >= 5 and cols[0][0].isdigit() and cols[-1] != "total":
                        calls[cols[-1]] = calls.get(cols[-1], 0) + int(cols[3])
            n = max(1, r["requests"])
            per_task[key] = sum(calls.values()) / n
            top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
            notes = (f"strace -c, {r['requests']:,} tasks in {STRACE_SECONDS} s: "
                     + ", ".join(f"{name} {c / n:.2f}" for name, c in top))
            self.rows.append({"id": "s", "target": f"{label}, system calls per task",
                              "conc": 16, "sys": per_task[key], "notes": notes})
            say(f"s {label}: {per_task[key]:.2f} system calls per task; {notes}")
        if per_task.get("p") and per_task.get("d"):
            self.rows.append({"id": "s/p", "target": "andera-lb ÷ Pingora floor", "conc": 16,
                              "sys": per_task["d"] / per_task["p"], "ratio": True,
                              "notes": "ratio of system calls per task"})

    def set_rss(self, rows, pids):
        mib = vm_kib(pids, "VmHWM") / 1024
        for r in rows:
            r["rss"] = mib

    def selection(self):
        """(e): CPU per task with 10 / 1,000 / 10,000 Workers registered."""
        results = {}
        for n in SELECT_WORKERS:
            urls = [f"http://127.0.0.1:{self.port['stub']}/w{i}" for i in range(1, n + 1)]
            say(f"e: starting andera-lb with {n} Workers")
            p = self.start_lb(urls, f"andera-lb-e{n}")
            reg, avail = self.wait_available(p, n, REG_TIMEOUT)
            label = f"andera-lb, {n:,} Workers"
            if reg is None:
                say(f"e: only {avail}/{n} Workers available after {REG_TIMEOUT:.0f} s")
                self.rows.append({"id": "e", "target": label, "conc": SELECT_CONC, "notes":
                                  f"NOT MEASURED: registration incomplete, {avail:,}/{n:,} available "
                                  f"after {REG_TIMEOUT:.0f} s (BENCH_REGISTRATION_TIMEOUT)"})
                results[n] = None
            else:
                feeds = self.wait_feeds(self.port["wsfeed"], n, 120)
                pids = tree(p.pid)
                quiet = self.settle(pids, 60)
                note = f"registered in {reg:.2f} s" if reg < 10 else f"registered in {reg:.0f} s"
                if not feeds:
                    note += f", only {self.feed_stats(self.port['wsfeed']).get('open')} feeds open"
                if not quiet:
                    note += ", LB never idle before the run"
                row = self.point("e", label, self.port["lb"], SELECT_CONC, pids, LOAD_CPU, note)
                self.set_rss([row], pids)
                results[n] = row["cpu_us"]
            self.stop(p, timeout=30)
            self.wait_feeds_closed(self.port["wsfeed"], 60)
        lo, hi = min(SELECT_WORKERS), max(SELECT_WORKERS)
        if lo != hi:
            if results.get(lo) and results.get(hi):
                r = results[hi] / results[lo]
                self.targets.append((r <= 1.2, f"selection cost at {hi:,} Workers ≤ 1.2 × at {lo:,}",
                                     f"{results[hi]:.1f} / {results[lo]:.1f} µs = {r:.2f}×"))
            else:
                self.targets.append((False, f"selection cost at {hi:,} Workers ≤ 1.2 × at {lo:,}",
                                     "not measured (registration did not complete)"))

    def queue(self):
        """(f): QUEUE_TASKS tasks waiting at once; RSS cost; drain rate once slots free."""
        env = dict(os.environ, LB_AUTH_KEY=LB_KEY, AUTH_KEY=WK_KEY, RUST_LOG="warn")
        sim_a = self.spawn("sim-a", [self.sim_bin, "--port", str(self.port["simA"]), "--ws-port",
                                     str(self.port["simA_ws"]), "--slots", "1"], cpu=LOAD_CPU, env=env)
        sim_b = self.spawn("sim-b", [self.sim_bin, "--port", str(self.port["simB"]), "--ws-port",
                                     str(self.port["simB_ws"]), "--slots", str(DRAIN_SLOTS)],
                           cpu=LOAD_CPU, env=env)
        self.wait_port(self.port["simA"], sim_a)
        self.wait_port(self.port["simB"], sim_b)
        url_a = f"http://127.0.0.1:{self.port['simA']}"
        url_b = f"http://127.0.0.1:{self.port['simB']}"
        p = self.start_lb([url_a], "andera-lb-f", discovery_ms=3000, heartbeat_ms=3000,
                          max_queued=2 * QUEUE_TASKS)
        reg, _ = self.wait_available(p, 1, 60)
        if reg is None:
            raise RuntimeError("andera-lb never saw andera-worker-sim available")
        pids = [p.pid]
        self.settle(pids, 10)
        rss0 = vm_kib(pids, "VmRSS")
        out = os.path.join(self.tmp, "qclient.json")
        body = SLEEP_BODY % QUEUE_TASK_MS
        t_fire = time.monotonic()
        qc = self.spawn("qclient", [sys.executable, os.path.join(HERE, "qclient.py"), "--port",
                                    str(self.port["lb"]), "--n", str(QUEUE_TASKS), "--body", body,
                                    "--lb-key", LB_KEY, "--wk-key", WK_KEY, "--out", out],
                        cpu=LOAD_CPU)
        peak_depth, peak_rss = 0, rss0
        t_peak = None
        while time.monotonic() - t_fire < 180:
            d = self.lb_health()["queue"]["depth"]
            rss = vm_kib(pids, "VmRSS")
            peak_rss = max(peak_rss, rss)
            if d > peak_depth:
                peak_depth, t_peak = d, time.monotonic()
            sent = "sent" in open(qc.log, errors="replace").read()
            # Full: every request written and no new peak for a second (the 1-slot
            # Worker keeps taking one task per QUEUE_TASK_MS meanwhile).
            if sent and time.monotonic() - (t_peak or t_fire) > 1.0:
                break
            if qc.poll() is not None:
                break
            time.sleep(0.1)
        hwm = vm_kib(pids, "VmHWM")
        say(f"f: peak queue depth {peak_depth}, RSS {rss0 / 1024:.1f} → {peak_rss / 1024:.1f} MiB")
        # Free slots: a second Worker with DRAIN_SLOTS slots joins the list. Its own
        # counter (GET /sim/stats, polled every 20 ms) tells when the drain starts:
        # andera-lb's /health answers late while it is busy dispatching.
        def sim_stats(name):
            try:
                return json.loads(http_get(self.port[name], "/sim/stats", timeout=5)[1])
            except (OSError, ValueError, http.client.HTTPException):
                return {}

        def b_requests():
            return sim_stats("simB").get("requests")

        t_add = time.monotonic()
        self.write_workers([url_a, url_b])
        t_b = None
        while time.monotonic() - t_add < 240 and qc.poll() is None:
            n = b_requests()
            if t_b is None and n:
                t_b = time.monotonic() - 0.01  # midpoint of the 20 ms polling gap
            time.sleep(0.02)
        try:
            qc.wait(60)
        except subprocess.TimeoutExpired:
            self.stop(qc)
        n_b = b_requests() or 0
        sa = sim_stats("simA")
        res = json.load(open(out)) if os.path.exists(out) else {"done": [], "statuses": {}, "errors": {}}
        done = sorted(res["done"])
        t_last = done[-1] if done else float("nan")
        drain = n_b / (t_last - t_b) if t_b and n_b else float("nan")
        extra_mib = (peak_rss - rss0) / 1024
        statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(res["statuses"].items()))
        errors = ", ".join(f"{k}: {v:,}" for k, v in sorted(res["errors"].items()))
        notes = (f"peak depth {peak_depth:,} (filled in {(t_peak or t_fire) - t_fire:.1f} s); RSS "
                 f"{rss0 / 1024:.1f} → {peak_rss / 1024:.1f} MiB (+{extra_mib:.1f} MiB, "
                 f"{(peak_rss - rss0) / max(1, peak_depth):.1f} KiB/task; VmHWM {hwm / 1024:.1f}); "
                 f"drain {drain:,.0f} tasks/s ({n_b:,} tasks by a {DRAIN_SLOTS}-slot Worker added to "
                 f"the list, {QUEUE_TASK_MS} ms each, in {t_last - (t_b or t_last):.2f} s"
                 f"); the 1-slot Worker got {sa.get('requests', 0):,} requests, completed "
                 f"{sa.get('completed', 0):,} (max in flight {sa.get('maxInFlight', '?')}); client: {statuses}" + (f"; errors {errors}" if errors else ""))
        self.rows.append({"id": "f", "target": f"{QUEUE_TASKS:,} queued tasks", "rss": extra_mib,
                          "notes": notes})
        say("f: " + notes)
        ok = peak_depth >= 0.95 * QUEUE_TASKS and extra_mib < 64
        self.targets.append((ok, f"{QUEUE_TASKS:,} queued tasks in < 64 MiB extra RSS",
                             f"+{extra_mib:.1f} MiB at depth {peak_depth:,}"
                             + ("" if peak_depth >= 0.95 * QUEUE_TASKS else " (depth not reached)")))
        self.stop(p, timeout=30)
        self.stop(sim_a)
        self.stop(sim_b)

    def handoff(self):
        """(g): time from a slot freeing to the next queued task reaching the Worker."""
        g = self.spawn("stubworker", [sys.executable, os.path.join(HERE, "stubworker.py"),
                                      "--port", str(self.port["g"]), "--ws-port", str(self.port["g_ws"]),
                                      "--key", LB_KEY, "--limit", "1", "--delay-ms", str(HANDOFF_MS)],
                       cpu=LOAD_CPU)
        self.wait_port(self.port["g"], g)
        self.wait_port(self.port["g_ws"], g)

        def gaps():
            data = json.loads(http_get(self.port["g"], "/stats")[1])
            t = sorted(data["tasks"])[3:]  # the first few warm the connections
            d = [(t[i + 1][0] - t[i][1]) / 1000 for i in range(len(t) - 1)]
            http_get(self.port["g"], "/reset", method="POST", body=b"")
            return sorted(x for x in d if x >= 0), sum(1 for x in d if x < 0), data["maxInFlight"]

        # Reference: a client sending back to back straight to the stub (no LB, no queue).
        self.wrk(self.port["g"], 1, 2, LOAD_CPU)
        floor, _, _ = gaps()
        secs = max(2, math.ceil(HANDOFF_TASKS * (HANDOFF_MS + 1) / 1000))
        p = self.start_lb([f"http://127.0.0.1:{self.port['g']}"], "andera-lb-g")
        if self.wait_available(p, 1, 60)[0] is None:
            raise RuntimeError("andera-lb never saw the stub worker available")
        self.wait_feeds(self.port["g_ws"], 1, 30)
        http_get(self.port["g"], "/reset", method="POST", body=b"")
        self.wrk(self.port["lb"], 4, secs, LOAD_CPU)
        vals, overlaps, max_in = gaps()
        self.stop(p, timeout=30)
        self.stop(g)
        med, p99 = statistics.median(vals) if vals else float("nan"), pct(vals, 99)
        fmed = statistics.median(floor) if floor else float("nan")
        notes = (f"median {med:.0f} µs, p99 {p99:.0f} µs over {len(vals)} hand-offs "
                 f"(slots 1, {HANDOFF_MS:g} ms tasks, 4 clients); stub+client floor without LB: "
                 f"median {fmed:.0f} µs, p99 {pct(floor, 99):.0f} µs"
                 + (f"; LB OVERFILLED the Worker {overlaps}× (max in flight {max_in})" if overlaps else ""))
        self.rows.append({"id": "g", "target": "slot hand-off", "notes": notes})
        say("g: " + notes)
        self.targets.append((med < 1000 and not overlaps, "hand-off median < 1 ms",
                             f"median {med:.0f} µs, p99 {p99:.0f} µs"))

    # ------------------------------------------------------------ output
    def table(self, header):
        cols = [("id", "id", "<"), ("target", "target", "<"), ("conc", "conc", ">"),
                ("rps", "req/s", ">"), ("p50", "p50 ms", ">"), ("p99", "p99 ms", ">"),
                ("cpu_us", "CPU µs/req", ">"), ("cpu_pct", "proxy CPU%", ">"),
                ("rss", "peak RSS MiB", ">"), ("idle_kib", "KiB/idle conn", ">"),
                ("instr", "instr/task", ">"), ("sys", "syscalls/task", ">"),
                ("notes", "notes", "<")]

        def cell(r, k):
            if k not in r:
                return ""
            v = r.get(k)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return "" if k in ("conc", "notes") else "—"
            if r.get("ratio") and k in ("rps", "p50", "p99", "cpu_us", "rss", "idle_kib", "instr",
                                          "sys"):
                return f"{v:.2f}×"
            if k == "rps":
                return f"{v:,.0f}"
            if k in ("p50", "p99"):
                return f"{v:.2f}"
            if k in ("cpu_us", "cpu_pct"):
                return f"{v:.1f}" if k == "cpu_us" else f"{v:.0f}"
            if k == "idle_kib":
                return f"{v:.1f}"
            if k == "instr":
                return f"{v:,.0f}"
            if k == "sys":
                return f"{v:.2f}"
            if k == "rss":
                return (f"+{v:.1f}" if r.get("id") in ("f", "w") else f"{v:.1f}")
            return str(v)

        body = [[cell(r, k) for k, _, _ in cols] for r in self.rows]
        tgt = [["PASS" if ok else "MISS", req] + [""] * (len(cols) - 3) + [measured]
               for ok, req, measured in self.targets]
        widths = [max([len(h)] + [len(x[i]) for x in body + tgt if i < len(cols) - 1])
                  for i, (_, h, _) in enumerate(cols)]
        widths[-1] = 0

        def line(cells):
            out = []
            for (k, _, al), w, c in zip(cols, widths, cells):
                out.append(c.ljust(w) if al == "<" else c.rjust(w))
            return "| " + " | ".join(out).rstrip() + ""

        sep = "|-" + "-|-".join("-" * w for w in widths[:-1]) + "-|" + "-" * 40
        print()
        for h in header:
            print(h)
        print(line([h for _, h, _ in cols]))
        print(sep)
        for r in body:
            print(line(r))
        if tgt:
            print(sep)
            for t in tgt:
                print("| " + t[0].ljust(widths[0]) + " | " + t[1] + "  →  " + t[-1])
        print()


def versions():
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    return (first(["nginx", "-v"]).replace("nginx version: ", ""),
            first(["haproxy", "-v"]).split(" - ")[0],
            first(["wrk", "-v"]).split(" [")[0])


def main():
    tmp = sys.argv[1]
    b = Bench(tmp)
    ok = False

    def on_signal(signum, _):
        # First signal interrupts the run; later ones (bench/run's trap) must not
        # interrupt the clean-up.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # bash starts background jobs with SIGINT ignored
    try:
        needed = ([b.lb_bin] if any(s in ONLY for s in "dtefgwivsk") else []) + \
            ([b.sim_bin] if "f" in ONLY else []) + ([b.floor_bin] if any(s in ONLY for s in "pivs") else [])
        for binary in needed:
            if not os.access(binary, os.X_OK):
                raise RuntimeError(f"{binary} is missing: run cargo build --profile profiling --workspace --bins")
        b.start_stub()
        if any(s in ONLY for s in "abcpd"):
            b.throughput()
        if "t" in ONLY:
            import traces  # bench/traces.py: row t, tracing off / on at 1.0 / at 0.01
            traces.row(b, sys.modules[__name__])
        if "e" in ONLY:
            b.selection()
        if "f" in ONLY:
            b.queue()
        if "g" in ONLY:
            b.handoff()
        if "w" in ONLY:
            import waiting  # bench/waiting.py: row w, many tasks waiting for one slot
            waiting.row(b)
        if "i" in ONLY:
            b.idle()
        if "v" in ONLY:
            b.instructions()
        if "s" in ONLY:
            b.syscalls()
        if "k" in ONLY:
            import cluster  # bench/cluster.py: row k, the cluster (#26)
            cluster.run(b, sys.modules[__name__])
        ok = True
    except KeyboardInterrupt:
        say("interrupted")
        b.notes.append("INTERRUPTED: run incomplete")
    except Exception as e:  # noqa: BLE001 - report what was measured so far
        import traceback
        traceback.print_exc()
        say(f"ERROR: {e}")
        b.notes.append(f"ERROR, run incomplete: {e}".splitlines()[0])
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        b.stop_all()
    nv, hv, wv = versions()
    cpu = (f"proxies pinned to CPU {PROXY_CPU}, wrk + stub Worker + helpers to CPU {LOAD_CPU} "
           f"(direct run: wrk on CPU {PROXY_CPU})") if PIN else "no CPU pinning (fewer than 2 CPUs)"
    header = [
        f"andera-lb benchmark — {NCPU} CPUs; {cpu}; every proxy gets one CPU: nginx "
        f"worker_processes 1, HAProxy nbthread 1, andera-lb server.threads 1.",
        f"Load: wrk -t1, keep-alive, POST /task (hello), {DURATION} s per point after {WARMUP} s "
        f"warm-up. Stub Worker: nginx (return 200), {STUB_LIMIT:,} slots, WebSocket feed: "
        f"bench/wsfeed.py. {nv}, {hv}, {wv}.",
        "CPU µs/req = utime+stime of the proxy's own processes / requests; proxy CPU% = share "
        "of one CPU during the run; peak RSS = VmHWM summed over the proxy's processes.",
    ] + b.notes
    b.table(header)
    for point, top in b.perf:
        print(f"perf top {PERF_TOP} by self time (perf record -F 1999 -g, --no-children --sort "
              f"symbol): {point}")
        for line in top:
            print("    " + line)
        print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
