"""How fast GET /api/v1/health answers while the largest allowed data set is uploaded.

Starts `fleetbench serve` (its own process, a fresh data directory) on a free loopback port, writes an
uncompressed .npz of zeros just under the upload limit (--mb, default 512 MiB: `serve`'s default limit),
streams it to POST /api/v1/datasets, and meanwhile polls /health every 50 ms over one keep-alive
connection. Prints the health latencies (idle first, then during the upload, which includes the server
checking and storing the data set) and the upload's time. The target (issue 14) is /health within 100 ms.

    python bench/api_health.py            # 512 MiB
    python bench/api_health.py --mb 256
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from protocol.proc import free_port

TOKEN = "bench-health-token"


def write_npz(path: Path, total_bytes: int) -> int:
    """An uncompressed .npz whose file is at most ``total_bytes``: one float32 array 'x' of zeros, written in
    pieces (nothing that size is held in memory). Returns the file's size."""
    n = (total_bytes - 4096) // 4 // 16 * 16  # room for the zip and .npy headers
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z, z.open("x.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n // 16, 16)})
        piece = bytes(2**22)
        left = n * 4
        while left:
            f.write(piece[: min(left, len(piece))])
            left -= min(left, len(piece))
    return path.stat().st_size


def _get_health(conn: http.client.HTTPConnection) -> float:
    t0 = time.perf_counter()
    conn.request("GET", "/api/v1/health")
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        raise RuntimeError(f"/health answered {r.status}")
    return time.perf_counter() - t0


def poll(port: int, stop: threading.Event, out: list[float], every_s: float = 0.05) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        t0 = time.perf_counter()
        out.append(_get_health(conn))
        time.sleep(max(0.0, every_s - (time.perf_counter() - t0)))
    conn.close()


def _summary(xs: list[float]) -> str:
    ms = sorted(x * 1000 for x in xs)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"n={len(ms)} p50={statistics.median(ms):.1f} ms p95={p95:.1f} ms max={ms[-1]:.1f} ms"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=512.0, help="the upload limit given to serve, in MiB; the .npz is just under it")
    args = ap.parse_args(argv)
    limit = int(args.mb * 2**20)
    with tempfile.TemporaryDirectory(prefix="fleetbench-health-") as tmp:
        root = Path(tmp)
        data = root / "zeros.npz"
        size = write_npz(data, limit)
        port = free_port()
        env = dict(os.environ, FLEETBENCH_API_TOKENS=TOKEN, PYTHONUNBUFFERED="1", FLEETBENCH_DISABLE_GPU_PROBE="1")
        log = open(root / "serve.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "controller.cli", "serve", "--port", str(port), "--data-dir",
                                   str(root / "fb"), "--max-upload-mb", str(args.mb)], env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    _get_health(http.client.HTTPConnection("127.0.0.1", port, timeout=2))
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"fleetbench serve did not start: {(root / 'serve.log').read_text()}")
                    time.sleep(0.2)
            idle: list[float] = []
            stop = threading.Event()
            t = threading.Thread(target=poll, args=(port, stop, idle))
            t.start()
            time.sleep(2.0)
            stop.set()
            t.join()

            during: list[float] = []
            stop = threading.Event()
            t = threading.Thread(target=poll, args=(port, stop, during))
            t.start()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600, blocksize=2**20)
            t0 = time.perf_counter()
            with open(data, "rb") as f:
                conn.request("POST", "/api/v1/datasets", body=f, headers={
                    "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream", "Content-Length": str(size)})  # fmt: skip
                r = conn.getresponse()
                answer = r.read().decode()
            upload_s = time.perf_counter() - t0
            stop.set()
            t.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    print(f"upload: {size:,} bytes ({size / 2**20:,.0f} MiB, limit {args.mb:g} MiB) -> {r.status} in {upload_s:.2f} s "
          f"({size / 2**20 / upload_s:,.0f} MiB/s)")  # fmt: skip
    if r.status != 201:
        print(f"  answer: {answer}")
    print(f"/health idle:          {_summary(idle)}")
    print(f"/health during upload: {_summary(during)}")
    worst = max(during) * 1000
    print(f"target /health <= 100 ms during the upload: {'met' if worst <= 100 else 'NOT met'} (max {worst:.1f} ms)")
    return 0 if r.status == 201 else 1


if __name__ == "__main__":
    sys.exit(main())
