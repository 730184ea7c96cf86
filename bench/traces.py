"""Row t of the benchmark: what OpenTelemetry tracing costs per task.

Three andera-lb processes on the same stub Worker, side by side, each pinned to the
proxy CPU like row d: tracing off, tracing on at sampler ratio 1.0 (every task's
spans exported), and on at 0.01. They export to bench/otlpsink.py (on the load
CPU). Their points are interleaved round by round, as b/c/p/d are, so that the
ratios t1/t0 and t.01/t0 (CPU per task against tracing off) come from one run.
Called by bench.py with its own module (for the helpers and the keys)."""

import json
import os
import signal
import statistics
import sys

# (key, label, sampler ratio or None for off)
VARIANTS = [
    ("t0", "andera-lb, tracing off", None),
    ("t1", "andera-lb, tracing on, ratio 1.0", "1.0"),
    ("t.01", "andera-lb, tracing on, ratio 0.01", "0.01"),
]


def start_variant(b, B, key, ratio, sink_port):
    """An andera-lb on the stub with its own ports, files and tracing settings."""
    port, admin = B.free_ports(2)
    workers = b.write_workers([f"http://127.0.0.1:{b.port['stub']}"])
    cfg = b.render("andera-lb.yaml", f"andera-lb-{key}.yaml", PORT=port, ADMIN_PORT=admin,
                   LB_KEY=B.LB_KEY, WORKERS_FILE=workers, DISCOVERY_MS=600000,
                   HEARTBEAT_MS=600000, MAX_QUEUED=20000)
    with open(cfg) as f:
        text = f.read()
    # Three processes at once: each its own pid file and upgrade socket.
    text = text.replace("/andera-lb.pid", f"/andera-lb-{key}.pid")
    text = text.replace("/andera-lb-upgrade.sock", f"/andera-lb-{key}-upgrade.sock")
    with open(cfg, "w") as f:
        f.write(text)
    env = {k: v for k, v in os.environ.items() if k not in B.LB_ENV and not k.startswith("OTEL_")}
    if ratio is not None:
        env.update({
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": ratio,
        })
    p = b.spawn(f"andera-lb-{key}", [b.lb_bin, "--config", cfg], cpu=B.PROXY_CPU, env=env,
                stop_sig=signal.SIGINT)
    b.wait_port(port, p)
    saved = b.port["lb"]
    b.port["lb"] = port  # wait_available asks the LB on b.port["lb"]
    try:
        reg, _ = b.wait_available(p, 1, 60)
    finally:
        b.port["lb"] = saved
    if reg is None:
        raise RuntimeError(f"andera-lb ({key}) never saw the stub Worker available")
    return p, port


def sink_counts(B, port):
    try:
        return json.loads(B.http_get(port, "/count", timeout=10)[1])
    except (OSError, ValueError):
        return {}


def row(b, B):
    # One sink per traced variant, so that each counts only its own exports.
    sinks, started = {}, []
    for key, label, ratio in VARIANTS:
        sink_port = B.free_ports(1)[0]
        if ratio is not None:
            sinks[key] = (sink_port, b.spawn(f"otlpsink-{key}", [
                sys.executable, os.path.join(B.HERE, "otlpsink.py"), "--port", str(sink_port)],
                cpu=B.LOAD_CPU))
            b.wait_port(sink_port, sinks[key][1])
        started.append((key, label, *start_variant(b, B, key, ratio, sink_port)))
    b.wait_feeds(b.port["wsfeed"], len(started), 30)
    pids = {key: B.tree(p.pid) for key, _, p, _ in started}
    for key in pids:
        b.settle(pids[key], 10)
    runs = {(key, c): [] for key, _, _, _ in started for c in B.CONCS}
    exported = {key: [] for key, _, _, _ in started}
    for rnd in range(B.REPEAT):
        for c in B.CONCS:
            for key, label, _, port in started:
                sink = sinks.get(key, (None,))[0]
                before = sink_counts(B, sink).get("requests", 0) if sink else 0
                r = b.point(key, label, port, c, pids[key], B.LOAD_CPU, keep=False,
                            profile=rnd == 0)
                runs[(key, c)].append(r)
                if sink:
                    exported[key].append(sink_counts(B, sink).get("requests", 0) - before)
    by = {}
    for key, _, p, _ in started:
        by[key] = [b.median_row(runs[(key, c)]) for c in B.CONCS]
        b.rows.extend(by[key])
        b.set_rss(by[key], pids[key])
    for _, _, p, _ in started:
        b.stop(p)
    for _, sink in sinks.values():
        b.stop(sink)
    b.wait_feeds_closed(b.port["wsfeed"])
    for key, label, _, _ in started[1:]:
        for c in B.CONCS:
            pairs = list(zip(runs[("t0", c)], runs[(key, c)]))
            cpu = sorted(rt["cpu_us"] / r0["cpu_us"] for r0, rt in pairs)
            ratio = lambda k: statistics.median(rt[k] / r0[k] for r0, rt in pairs)  # noqa: E731
            b.rows.append({
                "id": f"{key}/t0", "target": f"{label} ÷ off", "conc": c,
                "rps": ratio("rps"), "p50": ratio("p50"), "p99": ratio("p99"),
                "cpu_us": ratio("cpu_us"), "cpu_pct": None,
                "rss": by[key][0]["rss"] / by["t0"][0]["rss"], "ratio": True,
                "notes": "medians of per-round ratios; CPU ratio per round "
                         + ", ".join(f"{x:.2f}" for x in cpu)
                         + f"; its OTLP export requests during its points: {sum(exported[key])}",
            })
    if not sum(exported["t1"]):
        b.notes.append("row t: the ratio-1.0 instance exported nothing during its points")
