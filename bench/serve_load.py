"""Bounded load test of the prediction API on loopback: a fixed number of requests from a few
concurrent clients, then stop. Prints (and writes as JSON) throughput and latency percentiles and
the count of non-200 answers, which must be 0.

    .venv/bin/python bench/serve_load.py --requests 400 --clients 4 --batch 16 --out bench/results/serve_load.json

The server (uvicorn, in this process, one thread) and the clients (httpx, one thread each) share the
machine, so the figures are a lower bound for a dedicated server. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from advlab.attacks.blackbox.oracle import encode_array
from advlab.data import load_dataset
from advlab.serve import create_app, running_server
from advlab.training import default_config, train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="total requests (default 400)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--batch", type=int, default=16, help="images per request (default 16)")
    parser.add_argument("--format", choices=("array", "instances"), default="array")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the model (default 1)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, meta, _, _ = train_model(default_config("mnist"), torch.device("cpu"), progress=False)
    x, _ = load_dataset("mnist", "test").tensors(args.batch * 8)
    bodies = [{"array": encode_array(x[k * args.batch:(k + 1) * args.batch])} if args.format == "array"
              else {"instances": x[k * args.batch:(k + 1) * args.batch].tolist()} for k in range(8)]
    app = create_app(model, meta["classes"], input_shape=tuple(meta["input_shape"]), token="bench")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    per_client = [args.requests // args.clients + (k < args.requests % args.clients) for k in range(args.clients)]

    def client(count: int, url: str, seed: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer bench"}, timeout=120) as session:
            for k in range(count):
                start = time.perf_counter()
                response = session.post("/predict", json=bodies[(seed + k) % len(bodies)])
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    with running_server(app) as url:
        assert url.startswith("http://127.0.0.1:")
        httpx.post(f"{url}/predict", json=bodies[0], headers={"Authorization": "Bearer bench"})  # warm-up
        wall = time.perf_counter()
        workers = [threading.Thread(target=client, args=(n, url, k)) for k, n in enumerate(per_client)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - wall
    lat = np.array(latencies) * 1000
    result = {"requests": len(latencies), "clients": args.clients, "images_per_request": args.batch,
              "format": args.format, "torch_threads": args.threads, "cpu_count": os.cpu_count(),
              "load_average_1min": os.getloadavg()[0], "wall_seconds": wall,
              "requests_per_second": len(latencies) / wall, "images_per_second": len(latencies) * args.batch / wall,
              "latency_ms": {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                             "p99": float(np.percentile(lat, 99)), "max": float(lat.max())},
              "status_counts": {str(k): v for k, v in sorted(statuses.items())},
              "errors": sum(v for k, v in statuses.items() if k != 200)}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if result["errors"]:
        raise SystemExit(f"{result['errors']} requests failed")


if __name__ == "__main__":
    main()
