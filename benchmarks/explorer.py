"""Latency of the explorer's decode round trip: median and p95 over REQUESTS requests of
``GET /api/decode`` (random z, a fresh one each time) from one client, then from 4 concurrent
clients, against a trained run served on 127.0.0.1.

    python benchmarks/explorer.py RUN [--requests 500] [--clients 4] [--threads 1]

The issue's target: a round trip <= 50 ms for an MNIST model on this CPU.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from aevb.serve.explorer import Explorer
from aevb.serve.server import make_server


def timed_requests(base: str, dims: int, count: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(count):
        z = ",".join(f"{v:.4f}" for v in rng.normal(size=dims).clip(-3, 3))
        start = time.perf_counter()
        with urllib.request.urlopen(f"{base}/api/decode?z={z}", timeout=30) as response:
            response.read()
        times.append(1000 * (time.perf_counter() - start))
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered):.1f} ms, p95 {p95:.1f} ms over {len(ordered)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    explorer = Explorer(args.run)
    server = make_server(explorer)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    timed_requests(base, explorer.code_dim, 20, seed=99)  # warm-up
    print(f"run {args.run} ({explorer.config.model.name}, {explorer.code_dim}-D latent,"
          f" image {explorer.event_shape}), torch threads {args.threads}")
    print(f"one client:   {summary(timed_requests(base, explorer.code_dim, args.requests, 0))}")
    each = args.requests // args.clients
    with ThreadPoolExecutor(args.clients) as pool:
        parts = list(pool.map(lambda k: timed_requests(base, explorer.code_dim, each, k + 1),
                              range(args.clients)))
    print(f"{args.clients} clients:    {summary([t for part in parts for t in part])}")
    server.shutdown()


if __name__ == "__main__":
    main()
