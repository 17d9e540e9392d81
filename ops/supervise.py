"""`python -m ops.supervise [Procfile]`: run every Procfile process in the foreground, the way
`ops/run` needs it, which honcho does not do:

- a stop is graceful: SIGTERM (or Ctrl-C) sends one SIGTERM to each process's leader only (honcho
  signals whole process groups, so Dramatiq's workers got it twice and were killed at once), then
  waits up to STOP_TIMEOUT_SECONDS (default 660: the longest actor may take 10 minutes) before
  SIGKILL; a second signal, more than two seconds after the first, kills at once;
- a process that dies is restarted (with backoff: 1 s doubling to 60 s, reset after a minute of
  life) instead of taking every other process down with it;
- every line a process prints goes out prefixed with its name.

Each process runs under `/bin/sh -c` (so `${VAR:-default}` works as in the Procfile), in its own
session: a terminal's Ctrl-C reaches the supervisor only, which then stops them in order."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

LINE = re.compile(r"^(?P<name>[A-Za-z0-9_-]+):\s*(?P<command>.+)$")
MAX_BACKOFF = 60.0
HEALTHY_AFTER = 60.0


def parse_procfile(text: str) -> dict[str, str]:
    """{name: command} in file order; comments and blank lines skipped."""
    processes: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if match is None:
            raise SystemExit(f"Procfile line {number}: expected 'name: command'")
        processes[match["name"]] = match["command"]
    return processes


@dataclass
class Child:
    name: str
    command: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = 1.0
    restart_at: float | None = None
    pumps: list[threading.Thread] = field(default_factory=list)


class Supervisor:
    def __init__(self, processes: dict[str, str], *, stop_timeout: float, out: IO[str] = sys.stdout) -> None:
        self.children = [Child(name, command) for name, command in processes.items()]
        self.stop_timeout = stop_timeout
        self.out = out
        self.width = max((len(name) for name in processes), default=6)
        self.lock = threading.Lock()
        self.stopping_since: float | None = None
        self.kill_now = False

    def say(self, name: str, text: str) -> None:
        with self.lock:
            self.out.write(f"{time.strftime('%H:%M:%S')} {name.ljust(self.width)} | {text}\n")
            self.out.flush()

    def start(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {child.command}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        pump = threading.Thread(target=self._pump, args=(child.name, child.proc.stdout), daemon=True)
        pump.start()
        child.pumps = [pump]
        self.say("system", f"{child.name} started (pid {child.proc.pid})")

    def _pump(self, name: str, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in iter(stream.readline, b""):
            self.say(name, raw.decode(errors="replace").rstrip("\n"))

    def on_signal(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.stopping_since is None:
            self.stopping_since = now
            self.say("system", f"{signal.Signals(signum).name}: stopping every process (graceful)")
            for child in self.children:
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)  # the leader only: it stops its own children
        elif now - self.stopping_since > 2.0:  # a terminal's Ctrl-C and ops/run's TERM come together
            self.say("system", "second signal: killing every process now")
            self.kill_now = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        for child in self.children:
            self.start(child)
        while True:
            now = time.monotonic()
            alive = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
            if self.stopping_since is not None:
                if not alive:
                    self.say("system", "every process stopped")
                    return 0
                if self.kill_now or now - self.stopping_since > self.stop_timeout:
                    for child in alive:
                        self.say("system", f"sending SIGKILL to {child.name}")
                        _killpg(child)
                    self.kill_now = False
                    self.stopping_since = now - self.stop_timeout + 5  # wait 5 s more for them to go
            else:
                for child in self.children:
                    self._restart_if_dead(child, now)
            time.sleep(0.1)

    def _restart_if_dead(self, child: Child, now: float) -> None:
        if child.proc is None or child.proc.poll() is None:
            return
        if child.restart_at is None:
            if now - child.started_at > HEALTHY_AFTER:
                child.backoff = 1.0
            _killpg(child)  # whatever it left behind in its group
            child.restart_at = now + child.backoff
            self.say("system", f"{child.name} exited (rc={child.proc.returncode}); restarting in {child.backoff:.0f}s")
            child.backoff = min(child.backoff * 2, MAX_BACKOFF)
        elif now >= child.restart_at:
            self.start(child)


def _killpg(child: Child) -> None:
    if child.proc is None:
        return
    try:
        os.killpg(child.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "Procfile")
    timeout = float(os.environ.get("STOP_TIMEOUT_SECONDS", "660"))
    sys.exit(Supervisor(parse_procfile(path.read_text()), stop_timeout=timeout).run())


if __name__ == "__main__":
    main()
