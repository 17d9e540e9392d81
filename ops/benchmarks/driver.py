"""What the benchmarks share: the machine's figures, CPU of processes, wrk runs, the bench bots'
configuration and seeded leads, driving /start at a fixed rate, welcome latency, and the report
writer (JSON and a Markdown table under --out, the machine first)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ops.procs import Platform, free_port, wait_until

BOTS = 20  # 200 updates/s over 20 bots stays under Telegram's 30 messages/s per bot
SECRET = "bench-secret"

WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local body = '{"update_id":' .. counter .. ',"message":{"message_id":1,"date":0,"text":"/start",' ..
    '"from":{"id":7,"is_bot":false,"first_name":"B"},"chat":{"id":7,"type":"private"}}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
    ["X-Telegram-Bot-Api-Secret-Token"] = "SECRET"}, body)
end
""".replace("SECRET", SECRET)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        mem_gib = round(kib / 1024 / 1024, 1)
    except (OSError, AttributeError):
        pass
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "redis": redis_version.split(" sha=")[0],
        "database": os.environ.get("DATABASE_URL", "").split(":", 1)[0],
    }


def cpu_seconds(root_pid: int) -> float:
    """User + system CPU time of a process and every live descendant (a worker's forked
    children), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


def redis_pid(port: int) -> int | None:
    """The local redis-server listening on `port` (its process title says so), if any."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("redis-server") and f":{port}" in title:
                return int(entry.name)
    return None


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, seconds: float, concurrency: int, script: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency.get("50"),
        "p99_ms": latency.get("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else None,
    }


ACK_ROUNDS = 3


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (its latencies come with it)."""
    return sorted(runs, key=lambda r: r["requests_per_second"])[len(runs) // 2]


def bench_config(bots: int) -> dict[str, Any]:
    return {
        "bots": [
            {
                "id": f"bench-{i}",
                "token": f"{900000 + i}:BENCH",
                "username": f"bench_{i}_bot",
                "webhook_secret": SECRET,
                "welcome": {"text": "Olá! Escolha seu plano:"},
            }
            for i in range(bots)
        ]
    }


def seller_config(bots: int, offer: dict[str, Any], **bot: Any) -> dict[str, Any]:
    """The bench bots (ids, tokens and secret as `bench_config`) selling one offer through a sandbox
    gateway, with more keys per bot (`downsells`, `subscriptions`, ...)."""
    data = bench_config(bots)
    data["gateways"] = [{"id": "bench-gw", "kind": "sandbox", "webhook_secret": "s", "pix_key": "pix@example.com",
                         "merchant_name": "BENCH", "merchant_city": "SAO PAULO"}]  # fmt: skip
    for entry in data["bots"]:
        entry.update(gateway="bench-gw", offers=[dict(offer)], **bot)
    return data


def seed_leads(database: Any, bots: int, total: int, now: Any) -> Iterator[list[tuple[int, str, int]]]:
    """`total` fresh leads spread over the bench bots (`bench-{i % bots}`), 1,000 per transaction;
    yields each chunk's (lead id, bot id, i) inside its transaction, so the rows that belong with
    them (follow-ups, subscriptions) are inserted in the same one."""
    from db.models import Lead

    base = int(time.time()) * 1000  # fresh user ids on a reused database
    for start in range(0, total, 1000):
        with database.atomic():
            span = range(start, min(start + 1000, total))
            rows = [{"bot": f"bench-{i % bots}", "person_id": base + i, "chat_id": base + i, "first_name": "B",
                     "first_seen_at": now, "last_seen_at": now} for i in span]  # fmt: skip
            Lead.insert_many(rows).execute()
            query = Lead.select(Lead.id, Lead.bot, Lead.person_id).where(
                Lead.person_id.between(base + start, base + span[-1]))  # fmt: skip
            found: list[tuple[int, str, int]] = list(query.tuples())  # type: ignore[arg-type]  # .tuples() yields tuples
            yield [(lead_id, bot_id, user - base) for lead_id, bot_id, user in found]


def warm_up(edge: str, telegram: str) -> None:
    """Posts a few /start and waits for their welcomes: connections, caches and code paths are
    warm before anything is measured (a cold worker's first welcome takes most of a second)."""
    base = int(time.time()) * 100_000 - 50_000
    asyncio.run(_drive(edge, 20, 1.0, base))
    wait_until(lambda: sum(1 for c in httpx.get(f"{telegram}/_calls", timeout=60).json()
                           if c["method"] == "sendMessage" and int(c["params"]["chat_id"]) >= base) >= 20,
               60, "warm-up welcomes")  # fmt: skip


def welcomes_meanwhile(calls: list[dict[str, Any]], sent: dict[int, float], acks: list[float], failures: int,
                       first_chat: int, rate: int, seconds: float) -> dict[str, Any]:  # fmt: skip
    """/start → welcome latency of the updates `_drive` posted (chats from `first_chat` on), from
    the fake Telegram's recorded calls: what the funnel got while something else loaded the machine."""
    welcomes: dict[int, float] = {}
    for c in calls:  # the first message to each chat: later ones (a broadcast, a follow-up) are not its welcome
        if c["method"] == "sendMessage" and int(c["params"]["chat_id"]) >= first_chat:
            welcomes.setdefault(c["params"]["chat_id"], c["at"])
    latencies = [(welcomes[chat] - at) * 1000 for chat, at in sent.items() if chat in welcomes]
    return {"rate_per_second": rate, "seconds": seconds, "updates": len(sent), "welcomes": len(latencies),
            "edge_failures": failures, "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "ack_p99_ms": percentile(acks, 0.99)}  # fmt: skip


@dataclass(frozen=True)
class Drained:
    """What `against_the_funnel` saw: every call the fake Telegram got, the funnel's latency
    meanwhile, and when the scheduled work was done."""

    calls: list[dict[str, Any]]
    funnel: dict[str, Any]
    seconds: float  # from the clock's start to `done()`
    finished_at: Any  # naive UTC, as the database keeps time


def against_the_funnel(prefix: str, done: Callable[[], bool], *, rate: int, seconds: float, processes: int,
                       threads: int, followup_threads: int) -> Drained:  # fmt: skip
    """Scheduled work (follow-ups, expiries) already seeded in the database, run by the processes
    as the Procfile runs them (chat workers for the funnel, a followups process apart) against a
    local fake Telegram: the funnel warmed up first, then the clock started, /start driven at
    `rate` meanwhile, until `done()`."""
    from db.database import utcnow

    work = Path(tempfile.mkdtemp(prefix=f"grimbots-bench-{prefix}-"))
    telegram_port, edge_port = free_port(), free_port()
    env = Platform(work, TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram_port}", LOG_LEVEL="WARNING")
    edge, telegram = f"http://127.0.0.1:{edge_port}", f"http://127.0.0.1:{telegram_port}"
    try:
        env.fake_telegram(telegram_port)
        env.edge(edge_port)
        for i in range(processes):
            env.worker(f"chat-{i}", threads=threads, queues=("updates", "funnel"))
        env.worker("followups", threads=followup_threads, queues=("followups",))
        warm_up(edge, telegram)  # before the clock: no scheduled work runs yet
        started = time.monotonic()
        env.clock()
        base = int(time.time()) * 100_000  # the funnel's chats, in a range of their own
        sent, acks, failures = asyncio.run(_drive(edge, rate, seconds, base))
        wait_until(done, 1800, "the scheduled work", interval=1.0)
        elapsed, finished_at = time.monotonic() - started, utcnow()
        calls = httpx.get(f"{telegram}/_calls", timeout=120).json()
        return Drained(calls, welcomes_meanwhile(calls, sent, acks, failures, base, rate, seconds), elapsed,
                       finished_at)  # fmt: skip
    finally:
        env.close()
        shutil.rmtree(work, ignore_errors=True)


def report(name: str, results: dict[str, Any], rows: list[tuple[str, str]], out: Path) -> str:
    """Write a benchmark's results to `out` as JSON, and as a Markdown table (the machine first,
    then `rows`); print the table and return it."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = results["when"].replace(":", "")
    (out / f"{name}-{stamp}.json").write_text(json.dumps(results, indent=2))
    m = results["machine"]
    rows = [
        ("machine", f"{m['cpus']} × {m['cpu']}, {m['memory_gib']} GiB, Python {m['python']}, {m['redis']}"),
        ("database", m["database"]),
        *rows,
    ]
    text = "| measure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    (out / f"{name}-{stamp}.md").write_text(text)
    print(text)
    return text


def apply_bench_config() -> None:
    import catalog
    from db.database import init_db
    from db.migrate import migrate
    from db.models import Gateway

    database = init_db()
    migrate(database)
    with database.connection_context():
        known = {g.id for g in Gateway.select(Gateway.id)}
        catalog.apply(catalog.parse(bench_config(BOTS), known))


def start_update(update_id: int, chat_id: int) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "text": "/start",
            "from": {"id": chat_id, "is_bot": False, "first_name": "Bench"},
            "chat": {"id": chat_id, "type": "private"},
        },
    }


class LoadConnection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP to post and read a status: a
    load generator must cost far less CPU than what it loads, and httpx costs about as much as
    the edge does per request."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        status, _ = await self.request("POST", path, body, {"Content-Type": "application/json", **headers})
        return status

    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        """(status, response headers with lower-case names)."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        status_line = await self.reader.readline()
        answer: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            answer[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        length = int(answer.get("content-length", "0"))
        if length:
            await self.reader.readexactly(length)
        return int(status_line.split()[1]), answer


async def _drive(
    edge: str, rate: int, seconds: float, first_id: int, connections: int = 32,
    request: Callable[[int], tuple[str, bytes, dict[str, str], Any]] | None = None,
) -> tuple[dict[Any, float], list[float], int]:  # fmt: skip
    """Post at a fixed rate (open loop) over a few keep-alive connections; returns post times by
    key, ack latencies, failures. `request(i)` → (path, body, headers, key); default: a /start
    from chat `first_id + i` to the bench bots, keyed by chat."""
    sent: dict[Any, float] = {}
    acks: list[float] = []
    failures = 0
    total = int(rate * seconds)
    host, port = edge.split("//", 1)[1].split(":")
    idle: asyncio.Queue[LoadConnection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(LoadConnection(host, int(port)))

    def start(i: int) -> tuple[str, bytes, dict[str, str], Any]:
        chat = first_id + i
        body = json.dumps(start_update(first_id + i, chat)).encode()
        return f"/webhook/telegram/bench-{i % BOTS}", body, {"X-Telegram-Bot-Api-Secret-Token": SECRET}, chat

    async def post(i: int) -> None:
        nonlocal failures
        path, body, headers, key = (request or start)(i)
        conn = await idle.get()
        started = time.time()
        try:
            status = await conn.post(path, body, headers)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            conn.writer = None
            failures += 1
            return
        finally:
            idle.put_nowait(conn)
        acks.append((time.time() - started) * 1000)
        if status == 200:
            sent[key] = started
        else:
            failures += 1

    await open_loop(rate, total, post)
    return sent, acks, failures


async def open_loop(rate: int, total: int, start: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Start `start(i)` for i in range(total) at `rate` per second, whether earlier ones finished
    or not (open loop: a slow system does not slow the load), then wait for all of them."""
    t0 = time.monotonic()
    tasks = []
    for i in range(total):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(start(i)))
    await asyncio.gather(*tasks)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def welcome_latency(env: Platform, edge: str, telegram: str, rate: int, seconds: float) -> dict[str, Any]:
    def welcomes() -> dict[int, float]:
        calls = httpx.get(f"{telegram}/_calls", timeout=30).json()
        return {c["params"]["chat_id"]: c["at"] for c in calls if c["method"] == "sendMessage"}

    # Warm-up: connections, caches, code paths; not measured.
    base = int(time.time()) * 100_000  # fresh update ids and chats on every run, even on a reused database
    asyncio.run(_drive(edge, 50, 2, base))
    wait_until(lambda: len(welcomes()) >= 100, 60, "warm-up welcomes")
    httpx.post(f"{telegram}/_reset")

    sent, acks, failures = asyncio.run(_drive(edge, rate, seconds, base + 50_000))
    try:
        wait_until(lambda: len(welcomes()) >= len(sent), 60, "every welcome", interval=0.5)
    except AssertionError:
        pass
    seen = welcomes()
    latencies = [(seen[chat] - at) * 1000 for chat, at in sent.items() if chat in seen]
    return {
        "rate_per_second": rate,
        "seconds": seconds,
        "updates": len(sent),
        "edge_failures": failures,
        "welcomes": len(latencies),
        "missing": len(sent) - len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "ack_p50_ms": percentile(acks, 0.50),
        "ack_p99_ms": percentile(acks, 0.99),
    }


def _flush_queues() -> None:
    from actors.broker import broker

    broker.flush_all()
