"""Real processes for end-to-end tests and benchmarks: the fake Telegram server, the edge (uvicorn)
and Dramatiq workers, each started the way the Procfile starts them, on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A redis-server of a test's own on 127.0.0.1, configured as ops/run runs it (AOF fsynced on
    every write), that the test may stop, kill and start again from its AOF."""

    def __init__(self, directory: Path) -> None:
        self.port, self.dir = free_port(), directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "always", "--save", ""]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, 10, "redis-server")

    def ping(self) -> bool:
        import redis

        with redis.Redis(port=self.port) as client:
            return bool(client.ping())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop_then_kill(self, stopped_seconds: float = 1.0) -> None:
        """SIGSTOP (connections hang, then time out), then SIGKILL: no chance to write anything more."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        time.sleep(stopped_seconds)
        self.kill()


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("ab")
        # Own session: killing the group takes the worker's forked children too.
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hooks, no requeue, as a crash would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class Platform:
    """Spawns processes with one environment; stops them all on close."""

    def __init__(self, log_dir: Path, **env: str) -> None:
        self.log_dir = log_dir
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.processes: list[Process] = []

    def spawn(self, name: str, args: list[str]) -> Process:
        process = Process(name, args, self.env, self.log_dir)
        self.processes.append(process)
        return process

    def fake(self, name: str, port: int) -> Process:
        """One of ops/fakes/ (telegram, meta, ads, whatsapp) on 127.0.0.1:`port`, once it answers."""
        process = self.spawn(f"fake-{name}", [sys.executable, "-m", f"ops.fakes.{name}", "--port", str(port)])
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/_calls").status_code == 200, 20, f"fake {name}")
        return process

    def fake_telegram(self, port: int) -> Process:
        return self.fake("telegram", port)

    def fake_meta(self, port: int) -> Process:
        return self.fake("meta", port)

    def fake_ads(self, port: int) -> Process:
        """TikTok's Events API and Utmify's orders API (ops/fakes/ads.py)."""
        return self.fake("ads", port)

    def fake_whatsapp(self, port: int) -> Process:
        """Evolution API and the WhatsApp Cloud API (ops/fakes/whatsapp.py)."""
        return self.fake("whatsapp", port)

    def edge(self, port: int) -> Process:
        process = self.spawn(
            "edge",
            [
                str(BIN / "uvicorn"),
                "edge.asgi:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
            ],
        )
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200, 30, "edge ready")
        return process

    def worker(
        self,
        name: str = "worker",
        threads: int = 4,
        processes: int = 1,
        queues: tuple[str, ...] = ("updates", "funnel"),
    ) -> Process:
        args = [sys.executable, "-m", "ops.worker", "--queues", *queues]
        return self.spawn(name, [*args, "--processes", str(processes), "--threads", str(threads)])

    def panel(self, port: int) -> Process:
        """The seller panel (`python -m panel`) on 127.0.0.1:`port`, once it answers."""
        process = self.spawn("panel", [sys.executable, "-m", "panel"])
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200, 30, "the panel")
        return process

    def clock(self) -> Process:
        return self.spawn("clock", [sys.executable, "-m", "ops.clock"])

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
