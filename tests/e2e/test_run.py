"""`ops/run` as an operator uses it: a plain SIGTERM stops every process gracefully (no worker is
killed mid-message), and a process that dies is restarted instead of stopping the platform."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest

from ops.procs import ROOT, free_port, wait_until
from tests.conftest import once

pytestmark = once


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.timeout(120)
def test_sigterm_stops_everything_gracefully_and_a_dead_process_is_restarted(tmp_path: Path) -> None:
    port, panel = free_port(), free_port()
    env = {**os.environ, "EDGE_PORT": str(port), "PANEL_PORT": str(panel), "DATABASE_URL": f"sqlite:///{tmp_path}/run.sqlite3",
           "GRIMBOTS_VAR_DIR": str(tmp_path / "var"), "CHAT_PROCESSES": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen([str(ROOT / "ops" / "run")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200, 60, "the edge")
        wait_until(lambda: "chat started" in (tmp_path / "run.log").read_text(), 10, "the chat workers")
        # The panel runs, and sends whoever is not logged in to its login page.
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{panel}/health").status_code == 200, 30, "the panel")
        assert httpx.get(f"http://127.0.0.1:{panel}/").headers["location"].startswith("/login")
        everything = descendants(run.pid)
        assert len(everything) >= 8  # supervisor, web, four worker groups with their children, clock

        chat = next(p for p in everything if "--queues updates funnel" in " ".join(p.cmdline()))
        os.killpg(chat.pid, signal.SIGKILL)  # one worker group dies...
        wait_until(lambda: "chat exited" in (tmp_path / "run.log").read_text(), 10, "the death noticed")
        wait_until(lambda: len(re.findall("chat started", (tmp_path / "run.log").read_text())) == 2, 15, "restart")
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200  # ... and nothing else stopped

        everything = descendants(run.pid)
        run.send_signal(signal.SIGTERM)  # what systemd, docker and `kill` send
        assert run.wait(60) == 0
        _, alive = psutil.wait_procs(everything, timeout=10)
        assert alive == []
    finally:
        if run.poll() is None:
            for child in descendants(run.pid):
                child.kill()
            run.kill()
        log.close()
    text = (tmp_path / "run.log").read_text()
    assert "stopping every process (graceful)" in text and "every process stopped" in text
    assert "Killing worker process" not in text and "SIGKILL" not in text
