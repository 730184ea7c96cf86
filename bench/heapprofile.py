#!/usr/bin/env python3
"""Heap profile of waiting sync tasks (called by bench/heap). Standard library only.

andera-lb runs under heaptrack twice, with the same Worker (bench/stubworker.py, one
slot, on hold) and the same warm-up: once killed with no task waiting, once killed
with BENCH_HEAP_TASKS tasks waiting behind the busy slot. SIGKILL freezes the heap as
it is (nothing is dropped on the way out), so heaptrack's "leaked" bytes are what was
alive at that moment. The difference of the two, per allocation site, divided by the
number of waiting tasks, is what one waiting task holds; the table lists the sites by
bytes per task, each named by the innermost frames that are not allocator plumbing.
"""

import collections
import glob
import os
import re
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import LB_ENV, LB_KEY, PROXY_CPU, Bench  # noqa: E402
from waiting import Waiting, lb_pid, settle_rss  # noqa: E402

TASKS = int(os.environ.get("BENCH_HEAP_TASKS", "5000"))
TOP = int(os.environ.get("BENCH_HEAP_TOP", "15"))
FRAMES = int(os.environ.get("BENCH_HEAP_FRAMES", "3"))

# Frames that only carry an allocation to the allocator: a site is named by the frames
# inside them (the code that asked for the memory).
PLUMBING = re.compile(
    r"^(malloc|calloc|realloc|posix_memalign|aligned_alloc|operator new|__rust_|__rdl_|"
    r"_?_?libc_|_<|<?alloc::|<?core::|<?std::|hashbrown::raw|<hashbrown::raw|"
    r"<?bytes::bytes_mut::|<?bytes::bytes::|<?smallvec::|<\?>|\?\?|heaptrack|_RNv)")

# Rust's legacy symbol escapes, as heaptrack prints them (it does not demangle Rust).
ESCAPES = [("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$u7b$", "{"), ("$u7d$", "}"),
           ("$C$", ","), ("$RF$", "&"), ("$BP$", "*"), ("$u27$", "'"), ("$u5b$", "["),
           ("$u5d$", "]"), ("$u3b$", ";"), ("$u22$", '"'), ("..", "::")]


def demangle(frame):
    """A frame's function name, readable: escapes undone, the hash and file dropped."""
    name = frame.split(" (")[0]
    for k, v in ESCAPES:
        name = name.replace(k, v)
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    name = name.replace("::_{{closure}}", "").replace("::{{closure}}", "")
    return name[1:] if name.startswith("_<") else name


def profile(b, w, n, label):
    """Runs andera-lb under heaptrack, fills n waiting tasks, kills it; returns the
    data file and the VmRSS growth (KiB) from the warm state to the filled one."""
    workers = b.write_workers([w.url])
    cfg = b.render("andera-lb.yaml", f"heap-{label}.yaml", PORT=b.port["lb"],
                   ADMIN_PORT=b.port["lb_admin"], LB_KEY=LB_KEY, WORKERS_FILE=workers,
                   DISCOVERY_MS=600000, HEARTBEAT_MS=600000, MAX_QUEUED=n + 1000)
    env = {k: v for k, v in os.environ.items() if k not in LB_ENV}
    out = os.path.join(b.tmp, f"heaptrack-{label}")
    p = b.spawn(f"heaptrack-{label}", ["heaptrack", "-o", out, b.lb_bin, "--config", cfg],
                cpu=PROXY_CPU, env=env)
    b.wait_port(b.port["lb"], p, timeout=120)
    if b.wait_available(p, 1, 120)[0] is None:
        raise RuntimeError("andera-lb never saw the stub Worker available")
    b.wait_feeds(w.ws_port, 1, 60)
    pid = lb_pid(b, p)
    w.warm(b.port["lb"])
    rss0 = settle_rss(b, [pid])
    qc = w.fill(b.port["lb"], n, f"qclient-heap-{label}") if n else None
    rss1 = settle_rss(b, [pid])
    os.kill(pid, signal.SIGKILL)
    p.wait(600)  # heaptrack writes its file after the program ends
    if qc is not None:
        b.stop(qc)
    w.release()
    files = glob.glob(out + ".zst") + glob.glob(out + ".gz")
    if not files:
        raise RuntimeError(f"heaptrack wrote no file:\n{b.log_tail(p)}")
    return files[0], rss1 - rss0


def leaked_by_site(path):
    """{site: bytes alive at the kill} from heaptrack_print's flame-graph stacks."""
    stacks = path + ".stacks"
    subprocess.run(["heaptrack_print", "-f", path, "-p", "0", "-a", "0", "-T", "0", "-l", "0",
                    "--flamegraph-cost-type", "leaked", "-F", stacks],
                   check=True, stdout=subprocess.DEVNULL)
    sites = collections.Counter()
    with open(stacks, errors="replace") as f:
        for line in f:
            frames, _, cost = line.rstrip("\n").rpartition(" ")
            if not cost.isdigit():
                continue
            inner = [demangle(fr) for fr in frames.split(";")]
            inner = [fr for fr in inner if fr and not PLUMBING.match(fr)]
            sites[" ← ".join(reversed(inner[-FRAMES:])) or frames[-120:]] += int(cost)
    return sites


def report(base, full, lb_name, grew=None):
    before, after = leaked_by_site(base), leaked_by_site(full)
    diff = {s: after[s] - before.get(s, 0) for s in after}
    total = sum(after.values()) - sum(before.values())
    top = sorted(diff.items(), key=lambda kv: -kv[1])[:TOP]
    print(f"heap of one waiting sync task ({TASKS:,} waiting behind one busy slot, heaptrack, "
          f"{lb_name}): {total / TASKS / 1024:.2f} KiB of heap per task"
          + (f"; VmRSS grew {grew / TASKS:.2f} KiB per task" if grew is not None else ""))
    print()
    print("| bytes/task | share | allocation site (innermost frames first) |")
    print("|---:|---:|---|")
    for site, bytes_ in top:
        print(f"| {bytes_ / TASKS:,.0f} | {100 * bytes_ / max(1, total):.0f}% | "
              f"{site[:300].replace('|', '/')} |")
    rest = total - sum(v for _, v in top)
    print(f"| {rest / TASKS:,.0f} | {100 * rest / max(1, total):.0f}% | (every other site) |")
    print()


def main():
    if len(sys.argv) == 4:
        # bench/heapprofile.py --analyze IDLE WAITING: the table again from kept files.
        report(sys.argv[2], sys.argv[3], os.path.basename(sys.argv[3]))
        return 0
    b = Bench(sys.argv[1])
    try:
        w = Waiting(b)
        base, _ = profile(b, w, 0, "idle")
        full, grew = profile(b, w, TASKS, "waiting")
        report(base, full, b.lb_bin, grew)
        print(f"heaptrack files: {base}, {full} (kept with BENCH_KEEP_TMP=1)")
    finally:
        b.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
