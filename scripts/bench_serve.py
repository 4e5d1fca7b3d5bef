"""Requests/s and latency of `bilm serve`'s POST /fill, 1 and 8 concurrent clients, serialised vs batched.

    python scripts/bench_serve.py checkpoints/demo-bi checkpoints/demo-uni            # 10 s per cell
    python scripts/bench_serve.py checkpoints/demo-bi checkpoints/demo-uni --quick    # 2.5 s per cell, < 1 min

For each `--max-batch` (1: one request at a time; 8: requests that wait together share one
forward pass) a real `bilm serve` process is started on a free local port; for each model
and each number of clients, httpx clients (asyncio, one process) send /fill requests in a
closed loop, each sending its next request when the previous one is answered, over
sentences with one blank. The clients share the machine with the server: on a 2-core
machine they take part of its CPU, so the figures are a lower bound for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np

from bilm.machine import cpu_model

SENTENCES = [
    "the boys went to the ___ and then got out of the pool .",
    "The ___ of the United States is elected every four years .",
    "He was born in ___ , England , in 1950 .",
    "The film was released in ___ 2010 .",
    "She played the ___ in the orchestra .",
    "The game was ___ in Japan and North America .",
    "After the war , he returned to ___ and became a teacher .",
    "The river flows ___ the city before it reaches the sea .",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoints: list[str], max_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    compare = [a for c in checkpoints[1:] for a in ("--compare", c)]
    cmd = [sys.executable, "-m", "bilm", "serve", checkpoints[0], *compare, "--port", str(port)]
    cmd += ["--max-batch", str(max_batch), "--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"bilm serve failed: {proc.stderr.read()[-2000:]}")
        try:
            httpx.get(f"{url}/health", timeout=2).raise_for_status()
            return proc, url
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("bilm serve did not start within 120 s") from None
            time.sleep(0.2)


async def load(url: str, model: str, clients: int, seconds: float, k: int) -> dict:
    """`clients` closed-loop clients for `seconds`: requests/s and latency percentiles (ms)."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        for text in SENTENCES:  # warm up: each sentence once, not timed
            (await http.post("/fill", json={"text": text, "k": k, "model": model})).raise_for_status()
        stop = time.perf_counter() + seconds

        async def client(i: int) -> None:
            n = i
            while time.perf_counter() < stop:
                body = {"text": SENTENCES[n % len(SENTENCES)], "k": k, "model": model}
                t0 = time.perf_counter()
                r = await http.post("/fill", json=body)
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()
                n += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return dict(n=len(ms), rps=len(ms) / elapsed, p50=float(np.percentile(ms, 50)), p99=float(np.percentile(ms, 99)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="Served together; each is measured in turn.")
    parser.add_argument("--quick", action="store_true", help="2.5 s per cell (well under a minute for two models).")
    parser.add_argument("--seconds", type=float, default=10.0, help="Measured time per cell.")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--max-batch", default="1,8", help="Server settings to compare (1 = serialised).")
    parser.add_argument("--threads", type=int, default=1, help="The server's torch threads.")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    seconds = 2.5 if args.quick else args.seconds
    clients = [int(c) for c in args.clients.split(",")]
    batches = [int(b) for b in args.max_batch.split(",")]

    print(
        f"POST /fill, k={args.k}, {seconds:g} s per cell, server --threads {args.threads}; {cpu_model()}, "
        f"{os.cpu_count()} cores, clients in this process"
    )
    print(f"{'model':<14}{'max-batch':>10}{'clients':>9}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    rows = []
    for max_batch in batches:
        proc, url = start_server(args.checkpoints, max_batch, args.threads)
        try:
            models = [m["name"] for m in httpx.get(f"{url}/models").json()]
            for model in models:
                for n in clients:
                    r = asyncio.run(load(url, model, n, seconds, args.k))
                    rows.append((model, max_batch, n, r))
                    print(
                        f"{model:<14}{max_batch:>10}{n:>9}{r['n']:>10}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}",
                        flush=True,
                    )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if 1 in batches and len(batches) > 1:
        best = max(batches)
        for model, mb, n, r in rows:
            if mb == best and n == max(clients):
                serial = next(s for m, b, c, s in rows if m == model and b == 1 and c == n)
                print(
                    f"{model}: {n} clients, batched (max-batch {best}) / serialised: {r['rps'] / serial['rps']:.2f}x "
                    "requests/s"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
