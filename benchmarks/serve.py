"""Requests per second and latency of `distillrec serve` under 100 concurrent clients, beside the bare top-K.

Usage (from the repository root):
    python benchmarks/serve.py [--runs runs/bench-serve] [--seconds 30] [--clients 100] [-k 10]
                               [--client raw|httpx] [--json]

- trains a small LightGCN on the bundled `scientific` data under --runs (reused when already there);
- bare scoring: the service's own top-K (one user's scores on the cached representation, mask, top-K),
  timed in this process, per request;
- served: `distillrec serve` in a subprocess on a free loopback port (one uvicorn worker), and --clients
  concurrent clients, one keep-alive connection each, asking GET /recommend for random known users for
  --seconds (after a short warm-up); requests/s, p50/p99 latency (a client's wait, queueing behind the
  other clients included) and the errors (any status but 200, a wrong list length, a failed connection:
  must be 0). The clients run in this process on the same machine: by default a minimal asyncio HTTP/1.1
  client (~0.3 ms of CPU a request), since one httpx AsyncClient with 100 pooled connections spends ~10 ms
  of CPU a request and measures itself rather than the service (`--client httpx` to see it).
The ratio is the served time per request (1 / requests per second) over the bare scoring time: what HTTP,
JSON, the hop to the scoring thread and the clients themselves (same machine) add to each request's own work.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("runs/bench-serve"), help="where the model is trained")
    p.add_argument("--seconds", type=float, default=30.0, help="how long the clients send requests")
    p.add_argument("--clients", type=int, default=100, help="concurrent clients")
    p.add_argument("-k", type=int, default=10, help="list length")
    p.add_argument("--epochs", type=int, default=5, help="training epochs of the benchmark's model")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (the service and the bare timing)")
    p.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="raw: a minimal asyncio HTTP/1.1 client (default); httpx: one httpx AsyncClient",
    )
    p.add_argument("--bare-reps", type=int, default=2000, help="timed single-user top-Ks in process")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def trained_run(runs: Path, epochs: int) -> Path:
    from distillrec.experiment.api import train

    settings = {"epochs": epochs, "patience": epochs}
    (result,) = train("lightgcn", "scientific", seeds=[1], set=settings, out=runs, resume=True)
    return result.run_dir


def bare_scoring(
    run_dir: Path, device: str, k: int, reps: int, rng: np.random.Generator
) -> tuple[float, list]:
    """Seconds per single-user top-K on the cached representation (median of `reps`), and the user ids."""
    from distillrec.serve import Scorer

    scorer = Scorer(run_dir, device)
    users = rng.integers(0, scorer.n_users, reps)
    for u in users[:50]:
        scorer.topk(np.array([u]), k, False)
    times = np.empty(reps)
    for n, u in enumerate(users):
        t = time.perf_counter()
        scorer.topk(np.array([u]), k, False)
        times[n] = time.perf_counter() - t
    return float(np.median(times)), list(scorer.user_ids)


def start_service(run_dir: Path, port: int, device: str, log_path: Path) -> subprocess.Popen:
    code = "import sys; from distillrec.cli import main; sys.argv = ['distillrec', *sys.argv[1:]]; main()"
    cmd = [sys.executable, "-c", code, "serve", str(run_dir), "--port", str(port), "--device", device]
    log = log_path.open("w")
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited ({proc.returncode}):\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the service did not answer within {timeout:.0f} s:\n{log_path.read_text()}")
        time.sleep(0.25)


class RawConnection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for GET and a JSON answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        await self.writer.drain()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = dict(line.split(":", 1) for line in head[1:] if ":" in line)
        length = {k.strip().lower(): v.strip() for k, v in fields.items()}.get("content-length")
        if length is None:
            raise ConnectionError(f"no content-length in {head[0]!r}")
        return int(head[0].split()[1]), await self.reader.readexactly(int(length))

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()


def raw_clients(url: str, clients: int):  # noqa: ANN201
    """`clients` connections of the light client: (get(target) -> (status, body), close)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conns = [RawConnection(host, int(port)) for _ in range(clients)]

    async def close() -> None:
        await asyncio.gather(*(c.close() for c in conns))

    return [c.get for c in conns], close


def httpx_clients(url: str, clients: int):  # noqa: ANN201
    """One httpx AsyncClient with a pool of `clients` connections."""
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    http = httpx.AsyncClient(base_url=url, limits=limits, timeout=60)

    async def get(target: str) -> tuple[int, bytes]:
        r = await http.get(target)
        return r.status_code, r.content

    return [get] * clients, http.aclose


async def load(
    url: str, users: list, k: int, clients: int, seconds: float, seed: int, kind: str = "raw"
) -> dict:
    """`clients` concurrent clients, each with its own connection, for `seconds`: latencies and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    gets, close = (raw_clients if kind == "raw" else httpx_clients)(url, clients)

    async def client(n: int, stop: float, phase: int) -> None:
        rng = np.random.default_rng([seed, phase, n])
        get = gets[n % clients]
        while time.perf_counter() < stop:
            user = users[int(rng.integers(len(users)))]
            t = time.perf_counter()
            try:
                status, body = await get(f"/recommend?{urlencode({'user': str(user), 'k': k})}")
                if status != 200 or len(json.loads(body)["items"]) != k:
                    errors.append(f"{status}: {body[:200]!r}")
                    continue
            except Exception as exc:  # noqa: BLE001 - every failure counts, whatever its kind
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - t)

    try:
        warm_stop = time.perf_counter() + min(2.0, seconds / 10)  # connections opened, pool threads started
        await asyncio.gather(*(client(n, warm_stop, 0) for n in range(clients)))
        latencies.clear()
        errors.clear()
        start = time.perf_counter()
        await asyncio.gather(*(client(n, start + seconds, 1) for n in range(clients)))
        wall = time.perf_counter() - start
    finally:
        await close()
    lat = np.asarray(latencies) * 1e3
    return {
        "requests": len(latencies),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def main() -> None:
    args = parse_args()
    say = (lambda *a: None) if args.json else print
    rng = np.random.default_rng(0)
    say(f"training (or reusing) lightgcn, {args.epochs} epochs, on scientific under {args.runs} …")
    run_dir = trained_run(args.runs, args.epochs)
    say(f"run: {run_dir}")
    bare_s, users = bare_scoring(run_dir, args.device, args.k, args.bare_reps, rng)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "serve.log"
        proc = start_service(run_dir, port, args.device, log_path)
        try:
            wait_ready(url, proc, log_path)
            say(f"service up at {url}; {args.clients} clients for {args.seconds:g} s …")
            served = asyncio.run(load(url, users, args.k, args.clients, args.seconds, 1, args.client))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    per_request_s = 1.0 / served["requests_per_s"] if served["requests_per_s"] else float("inf")
    result = {
        "model": "lightgcn",
        "dataset": "scientific",
        "clients": args.clients,
        "client": args.client,
        "k": args.k,
        **served,
        "served_ms_per_request": round(per_request_s * 1e3, 3),
        "bare_scoring_ms": round(bare_s * 1e3, 3),
        "ratio": round(per_request_s / bare_s, 1),
        "cpu_count": os.cpu_count(),
    }
    rows = [
        (
            "requests/s",
            f"{result['requests_per_s']:.1f}",
            f"{result['requests']} requests in {result['wall_s']} s",
        ),
        ("p50 latency", f"{result['p50_ms']} ms", f"{args.clients} concurrent clients, queueing included"),
        ("p99 latency", f"{result['p99_ms']} ms", ""),
        ("errors", str(result["errors"]), result["first_error"] or "must be 0"),
        ("served time per request", f"{result['served_ms_per_request']} ms", "1 / requests per second"),
        (
            "bare scoring per request",
            f"{result['bare_scoring_ms']} ms",
            "one user's top-K, cached representation",
        ),
        ("ratio served / bare", f"{result['ratio']}x", "HTTP, JSON, scoring-thread hop, clients"),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    say("")
    for name, value, note in rows:
        say(f"{name:<{width}}  {value:>{vwidth}}  {note}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
