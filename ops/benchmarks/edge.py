"""`python -m ops bench edge`: how fast the edge acks Telegram updates, beside a bare Starlette
endpoint on the same machine (the framework's ceiling), and how long /start takes to become a
welcome at a fixed rate against a local fake Telegram. Uses REDIS_URL and DATABASE_URL as given
(ops/bench starts throwaway ones). Results go to --out as JSON and Markdown, with the machine."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ops.benchmarks.driver import (
    ACK_ROUNDS,
    WRK_SCRIPT,
    _flush_queues,
    apply_bench_config,
    machine,
    median_run,
    welcome_latency,
    wrk,
)
from ops.procs import BIN, Platform, free_port, wait_until

BARE_APP = """
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def webhook(request: Request) -> Response:
    await request.body()
    return Response(status_code=200)


app = Starlette(routes=[Route("/webhook/telegram/{bot_id}", webhook, methods=["POST"])])
"""


def run(
    *, seconds: float, concurrency: int, rate: int, out: Path, processes: int = 2, threads: int = 4
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian package wrk; ops/bench installs it)")
    apply_bench_config()
    work = Path(tempfile.mkdtemp(prefix="grimbots-bench-"))
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    (work / "bare_app.py").write_text(BARE_APP)
    results: dict[str, Any] = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "concurrency": concurrency,
    }
    telegram_port, edge_port, bare_port = free_port(), free_port(), free_port()
    env = Platform(work, TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram_port}", LOG_LEVEL="WARNING")
    try:
        bare = env.spawn(
            "bare",
            [
                str(BIN / "uvicorn"),
                "bare_app:app",
                "--app-dir",
                str(work),
                "--host",
                "127.0.0.1",
                "--port",
                str(bare_port),
                "--no-access-log",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
            ],
        )
        wait_until(
            lambda: httpx.post(f"http://127.0.0.1:{bare_port}/webhook/telegram/x").status_code == 200, 20, "bare"
        )
        env.edge(edge_port)
        edge = f"http://127.0.0.1:{edge_port}"
        # The welcome first, on a fresh Redis and database; then the ack runs, which flood the queue.
        fake = env.fake_telegram(telegram_port)
        workers = env.worker("workers", threads=threads, processes=processes)
        results["welcome"] = welcome_latency(env, edge, f"http://127.0.0.1:{telegram_port}", rate, seconds)
        results["welcome"]["worker_processes"], results["welcome"]["worker_threads"] = processes, threads
        workers.stop()  # the ack runs measure the edge alone
        fake.stop()
        _flush_queues()

        targets = {"bare": f"http://127.0.0.1:{bare_port}/webhook/telegram/bench-0",
                   "edge": f"{edge}/webhook/telegram/bench-0"}  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {"bare": [], "edge": []}
        for url in targets.values():
            wrk(url, 2, concurrency, script)  # warm-up
        # Alternate the two, three runs each: this machine's speed drifts by tens of percent
        # between runs, and a drift must not land on one side only.
        for _ in range(ACK_ROUNDS):
            for name, url in targets.items():
                runs[name].append(wrk(url, seconds, concurrency, script))
                _flush_queues()
        results["ack_runs"] = runs
        results["ack_bare_starlette"] = median_run(runs["bare"])
        results["ack_edge"] = median_run(runs["edge"])
        results["ack_ratio"] = round(
            results["ack_edge"]["requests_per_second"] / results["ack_bare_starlette"]["requests_per_second"], 3
        )
        bare.stop()
    finally:
        env.close()
        _flush_queues()
        shutil.rmtree(work, ignore_errors=True)
    write(results, out)
    return results


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = results["when"].replace(":", "")
    (out / f"edge-{stamp}.json").write_text(json.dumps(results, indent=2))
    m, bare, edge, w = results["machine"], results["ack_bare_starlette"], results["ack_edge"], results["welcome"]
    c = results["concurrency"]
    rows = [
        ("machine", f"{m['cpus']} × {m['cpu']}, {m['memory_gib']} GiB, Python {m['python']}, {m['redis']}"),
        ("database", m["database"]),
        (
            f"bare Starlette acks/s (c={c})",
            f"{bare['requests_per_second']:.0f} (p50 {bare['p50_ms']} ms, p99 {bare['p99_ms']} ms)",
        ),
        (
            f"edge acks/s (c={c})",
            f"{edge['requests_per_second']:.0f} (p50 {edge['p50_ms']} ms, p99 {edge['p99_ms']} ms, "
            f"non-2xx {edge['non_2xx']})",
        ),
        ("edge / bare", str(results["ack_ratio"])),
        (
            f"/start → welcome at {w['rate_per_second']}/s for {w['seconds']} s",
            f"p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, max {w['max_ms']} ms "
            f"({w['welcomes']}/{w['updates']} welcomes, {w['worker_processes']} worker processes × "
            f"{w['worker_threads']} threads)",
        ),
        ("edge ack during that run", f"p50 {w['ack_p50_ms']} ms, p99 {w['ack_p99_ms']} ms"),
    ]
    text = "| measure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    (out / f"edge-{stamp}.md").write_text(text)
    print(text)
