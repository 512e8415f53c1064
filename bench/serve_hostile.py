"""The prediction API under the hostile load of issue 17, on loopback, bounded in time: the server's
memory (its process tree: server, parser pool) and the latency of GET /health while

1. `--holders` clients (default 60) each send a body just under 32 MiB and hold the connection;
2. `--slow` sockets (default 1,100) open a request and trickle header lines, one a second, never
   finishing them;
3. `--parsers` clients (default 8) send 32 MiB JSON bodies of numbers that take seconds to parse.

    .venv/bin/python bench/serve_hostile.py --out bench/results/serve_hostile.json

The server is `advlab serve` in its own process (default limits: 32 MiB bodies, 4 bodies at once,
10 s for headers, 30 s for a body) with an untrained mnist_cnn (the answers do not matter here). Every
client loop stops by itself after `--seconds` per scenario; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from advlab.models import create_model, model_args, save_checkpoint

MIB = 2**20


def tree_rss_mib(pid: int) -> float:
    """Resident memory of pid and all its descendants (the parser's forkserver and worker)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class Probe:
    """GET /health on a fresh connection every `every` seconds; memory sampled alongside."""

    def __init__(self, url: str, pid: int, every: float = 0.25) -> None:
        self.url, self.pid, self.every = url, pid, every
        self.latencies: list[float] = []
        self.failures = 0
        self.rss: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                ok = httpx.get(f"{self.url}/health", timeout=10).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                self.latencies.append(time.perf_counter() - start)
            else:
                self.failures += 1
            self.rss.append(tree_rss_mib(self.pid))
            self.stop.wait(self.every)

    def __enter__(self) -> Probe:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def summary(self) -> dict:
        lat = np.array(self.latencies or [float("nan")]) * 1000
        return {"health_probes": len(self.latencies) + self.failures, "health_failures": self.failures,
                "health_ms_p50": round(float(np.percentile(lat, 50)), 1),
                "health_ms_p99": round(float(np.percentile(lat, 99)), 1), "health_ms_max": round(float(lat.max()), 1),
                "server_rss_mib_peak": round(max(self.rss), 1) if self.rss else None}


def request_head(length: int) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def send_and_hold(port: int, body: bytes, seconds: float, outcome: dict, lock: threading.Lock) -> None:
    """Send the whole body, then hold the connection until the answer or the end of the scenario."""
    status = "no answer"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
            sock.sendall(request_head(len(body)))
            sock.sendall(body)  # the one shared buffer: no copy per client
            answer = sock.recv(64)
            status = answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/1.1") else "closed"
    except (BrokenPipeError, ConnectionResetError):
        status = "reset while sending (refused, unread)"
    except TimeoutError:
        status = "no answer"
    with lock:
        outcome[status] = outcome.get(status, 0) + 1


def big_bodies(port: int, clients: int, body: bytes, seconds: float) -> dict:
    outcome: dict[str, int] = {}
    lock = threading.Lock()
    threads = [threading.Thread(target=send_and_hold, args=(port, body, seconds, outcome, lock), daemon=True)
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 5)
    return dict(sorted(outcome.items()))


def slow_sockets(port: int, count: int, seconds: float) -> dict:
    socks = []
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            s.setblocking(False)
            socks.append(s)
        except OSError:
            break
    opened = len(socks)
    closed_at: list[float] = []
    start = time.monotonic()
    while socks and time.monotonic() - start < seconds:
        time.sleep(1.0)
        alive = []
        for s in socks:
            try:
                s.send(b"X-Trickle: 1\r\n")
                if s.recv(1) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                alive.append(s)  # still open, nothing to read: the server is waiting for the headers
                continue
            except OSError:
                pass
            closed_at.append(time.monotonic() - start)
            s.close()
        socks = alive
    for s in socks:
        s.close()
    return {"opened": opened, "closed_by_server": len(closed_at), "still_open_at_end": len(socks),
            "closed_after_seconds_median": round(float(np.median(closed_at)), 1) if closed_at else None}


def numbers_body(size: int) -> bytes:
    """A valid request whose JSON holds about `size` bytes of numbers: slow to parse, then refused."""
    number = b"0.123456789,"
    count = (size - 64) // len(number)
    return b'{"instances": [[[[' + number * count + b'0.5]]]]}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holders", type=int, default=60)
    parser.add_argument("--slow", type=int, default=1100)
    parser.add_argument("--parsers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each scenario (default 20)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(Path(tmp) / "mnist_cnn.safetensors", create_model("mnist_cnn", "mnist"),
                                     {"architecture": "mnist_cnn", "model_args": model_args("mnist", 1, 28, 10),
                                      "dataset": "mnist", "input_shape": [1, 28, 28]})
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        server = subprocess.Popen([sys.executable, "-m", "advlab", "serve", str(checkpoint), "--port", str(port),
                                   "--device", "cpu"], env=env, stdout=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # raised here, after the server started
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.slow + 512)), hard))
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            # warm the parser worker once with a large valid body, so its start is not counted as load
            image = json.dumps({"instances": [[[[0.5] * 28] * 28]]}).encode()
            httpx.post(f"{url}/predict", content=image[:-1] + b" " * (MIB + 10) + b"}",
                       headers={"content-type": "application/json"}, timeout=60)
            time.sleep(1)
            result: dict = {"server": f"advlab serve (defaults), untrained mnist_cnn, pid {server.pid}",
                            "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
                            "baseline_rss_mib": round(tree_rss_mib(server.pid), 1)}
            with Probe(url, server.pid) as idle:
                time.sleep(3)
            result["idle"] = idle.summary()
            padded = b'{"instances": [[[[0.5]]]]' + b" " * (32 * MIB - 1024 - 30) + b"}"
            with Probe(url, server.pid) as probe:
                result["holders"] = {"clients": args.holders, "body_mib": round(len(padded) / MIB, 2),
                                     "outcome": big_bodies(port, args.holders, padded, args.seconds)}
            result["holders"].update(probe.summary())
            time.sleep(3)
            result["holders"]["rss_mib_after"] = round(tree_rss_mib(server.pid), 1)
            with Probe(url, server.pid) as probe:
                result["slow"] = {"sockets": args.slow, **slow_sockets(port, args.slow, args.seconds)}
            result["slow"].update(probe.summary())
            numbers = numbers_body(32 * MIB - 1024)
            with Probe(url, server.pid) as probe:
                result["parsers"] = {"clients": args.parsers, "body_mib": round(len(numbers) / MIB, 2),
                                     "outcome": big_bodies(port, args.parsers, numbers, max(args.seconds, 60))}
            result["parsers"].update(probe.summary())
            time.sleep(3)
            result["parsers"]["rss_mib_after"] = round(tree_rss_mib(server.pid), 1)
        finally:
            server.terminate()
            server.wait(30)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
