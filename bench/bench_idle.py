"""A running exporter with thousands of idle client sockets: threads, RSS, descriptors
and /metrics latency, for this checkout and (with --baseline) another one side by side.

    .venv/bin/python bench/bench_idle.py [--sockets 3000] [--rounds 2] [--baseline DIR]

Each run starts `python -m exporter` (the key-less demo, probes every 5 s) from a
checkout, waits 3 s, measures, opens the idle sockets (connect, send nothing; 4 at a
time, each batch once the exporter holds the last), measures again, and a third time 8 s
later (the new server
closes idle connections 5 s after the connect; the old one keeps a thread per socket
forever). With --baseline DIR (e.g. a `git
archive` of the start commit) runs alternate between the two checkouts, --rounds times
each, and the figures are medians.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Threads", "VmRSS"):
                out[key] = int(value.split()[0])
    out["fds"] = fd_count(pid)
    return out


def open_idle(port: int, n: int, pid: int) -> tuple[list[socket.socket], float]:
    """n sockets connected and held by the exporter `pid`, and the seconds it took. They
    are opened 4 at a time, each batch once the exporter holds the previous one: the old
    server's listen backlog is 5, and a client whose handshake overflowed it believes it
    is connected while the server never sees the connection."""
    t0 = time.perf_counter()
    socks: list[socket.socket] = []
    held = fd_count(pid)
    while len(socks) < n:
        batch = [socket.socket() for _ in range(min(4, n - len(socks)))]
        for s in batch:
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
        socks += batch
        deadline = time.perf_counter() + 5
        while fd_count(pid) < held + len(batch) and time.perf_counter() < deadline:
            time.sleep(0.0005)
        held = fd_count(pid)
    return socks, time.perf_counter() - t0


def scrape_ms(url: str, n: int = 20) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = requests.get(url, timeout=30)
        resp.raise_for_status()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run(root: Path, sockets: int) -> dict[str, float]:
    port = free_port()
    # None of the developer's exporter settings; the demo talks to 127.0.0.1 only.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "PROBE_", "HTTP_TIMEOUT", "LISTEN_", "LOG_", "DEMO",
                                "CONFIG_FILE", "ENABLE_DB", "DB_FILE", "WEB_AUTH", "HISTORY_"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(PROBE_INTERVAL_SEC="5", PROBE_MODE="all", LOG_LEVEL="WARNING",
               NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "exporter",
                             f"--web.listen-address=127.0.0.1:{port}"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        for _ in range(150):
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        time.sleep(3)
        before = proc_status(proc.pid)
        base_ms = scrape_ms(url)
        socks, held_s = open_idle(port, sockets, proc.pid)
        during = proc_status(proc.pid)
        idle_ms = scrape_ms(url)
        during_after_scrapes = proc_status(proc.pid)
        time.sleep(8)
        later = proc_status(proc.pid)
        for s in socks:
            s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "threads before": before["Threads"], "threads with idle sockets": during["Threads"],
        "threads 8 s later": later["Threads"],
        "fds with idle sockets": during["fds"], "fds 8 s later": later["fds"],
        "RSS before (MB)": before["VmRSS"] / 1024,
        "RSS with idle sockets (MB)": max(during["VmRSS"],
                                          during_after_scrapes["VmRSS"]) / 1024,
        "RSS growth (MB)": (max(during["VmRSS"], during_after_scrapes["VmRSS"])
                            - before["VmRSS"]) / 1024,
        "open them, 4 at a time (s)": held_s,
        "/metrics median, no idle sockets (ms)": base_ms,
        "/metrics median, idle sockets open (ms)": idle_ms,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sockets", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--baseline", type=Path, help="another checkout to compare with")
    args = ap.parse_args()
    need = 2 * args.sockets + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    roots = {"this checkout": HERE}
    if args.baseline:
        roots = {"baseline": args.baseline.resolve(), **roots}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in roots}
    for _ in range(args.rounds):
        for name, root in roots.items():
            results[name].append(run(root, args.sockets))
            print(f"{name}: {results[name][-1]}", file=sys.stderr, flush=True)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for name, rs in results.items()}
    names = list(medians)
    print(f"{args.sockets} idle sockets, medians of {args.rounds} runs")
    print(f"{'':42}" + "".join(f"{n:>16}" for n in names)
          + ("      ratio" if len(names) == 2 else ""))
    for key in medians[names[0]]:
        vals = [medians[n][key] for n in names]
        ratio = f"{vals[1] / vals[0]:>10.2f}x" if len(vals) == 2 and vals[0] else ""
        print(f"{key:42}" + "".join(f"{v:>16.1f}" for v in vals) + ratio)


if __name__ == "__main__":
    main()
