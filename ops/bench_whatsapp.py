"""`python -m ops bench whatsapp`: the WhatsApp channel beside Telegram, in one run on this machine.

1. Inbound messages per second acked by the edge: wrk posting Evolution `messages.upsert` bodies
   (each with a new message id, the bearer secret checked) and, for comparison, Telegram updates
   to the same edge, alone (no workers: the edge's own cost), three alternating runs each, median.
2. First message → welcome latency (p50/p99): new numbers writing to Evolution bots at --rate per
   second (below every configured limit: rate_per_minute 6000 per number), measured from the post
   to the fake WhatsApp's receipt of the welcome; then /start → welcome on Telegram bots at the
   same rate with the same workers. Evolution's typing delay is set to 0 for the run (it adds
   exactly itself to every welcome).

Uses REDIS_URL and DATABASE_URL as given (ops/bench starts throwaway ones); results go to --out
with the machine's figures."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ops.bench import (
    ACK_ROUNDS,
    BOTS,
    WRK_SCRIPT,
    _drive,
    _flush_queues,
    bench_config,
    machine,
    median_run,
    percentile,
    report,
    welcome_latency,
    wrk,
)
from ops.procs import Platform, free_port, wait_until

WA_BOTS = 20
SECRET = "bench-wa-secret"
WRK_EVOLUTION = """
counter = 0
request = function()
  counter = counter + 1
  local body = '{"event":"messages.upsert","instance":"bench","apikey":"K","data":{"key":{"remoteJid":"55119' ..
    string.format("%08d", counter) .. '@s.whatsapp.net","fromMe":false,"id":"BENCH' .. counter ..
    '"},"pushName":"B","message":{"conversation":"oi"}}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer SECRET"}, body)
end
""".replace("SECRET", SECRET)


def configure(fake: str) -> None:
    """The Telegram bench bots and WA_BOTS Evolution bots on the fake WhatsApp."""
    from db.database import init_db
    from db.migrate import migrate
    from db.models import Gateway
    from ops import config

    data = bench_config(BOTS)
    data["bots"] += [{"id": f"wa-{i}", "channel": "evolution", "number": f"551190000{i:04d}",
                      "webhook_secret": SECRET, "evolution_url": fake, "instance": f"bench-{i}", "apikey": "K",
                      "rate_per_minute": 6000, "welcome": {"text": "Olá! Escolha seu plano:"}}
                     for i in range(WA_BOTS)]  # fmt: skip
    database = init_db()
    migrate(database)
    with database.connection_context():
        known = {g.id for g in Gateway.select(Gateway.id)}
        config.apply(config.parse(data, known))


def upsert(bot: int, number: str, message_id: str) -> bytes:
    data = {"key": {"remoteJid": f"{number}@s.whatsapp.net", "fromMe": False, "id": message_id}, "pushName": "B",
            "message": {"conversation": "oi"}}  # fmt: skip
    return json.dumps({"event": "messages.upsert", "instance": f"bench-{bot}", "data": data}).encode()


def first_message(base: int) -> Callable[[int], tuple[str, bytes, dict[str, str], Any]]:
    """The i-th new number's first message to a WhatsApp bench bot (for ops.bench._drive), keyed by number."""

    def request(i: int) -> tuple[str, bytes, dict[str, str], Any]:
        number = str(base + i)
        body = upsert(i % WA_BOTS, number, f"B{number}")
        return f"/webhook/whatsapp/wa-{i % WA_BOTS}", body, {"Authorization": f"Bearer {SECRET}"}, number

    return request


def whatsapp_latency(edge: str, fake: str, rate: int, seconds: float) -> dict[str, Any]:
    def welcomes() -> dict[str, float]:
        calls = httpx.get(f"{fake}/_calls", timeout=30).json()
        return {str(c["params"].get("number")): c["at"] for c in calls}

    base = 5511_8000_0000 + int(time.time()) % 10_000 * 10_000
    asyncio.run(_drive(edge, 20, 2, 0, request=first_message(base)))  # warm-up, not measured
    wait_until(lambda: len(welcomes()) >= 40, 60, "warm-up welcomes")
    httpx.post(f"{fake}/_reset")
    sent, acks, failures = asyncio.run(_drive(edge, rate, seconds, 0, request=first_message(base + 5_000)))
    try:
        wait_until(lambda: len(welcomes()) >= len(sent), 60, "every welcome", interval=0.5)
    except AssertionError:
        pass
    seen = welcomes()
    latencies = [(seen[n] - at) * 1000 for n, at in sent.items() if n in seen]
    return {"rate_per_second": rate, "seconds": seconds, "messages": len(sent), "edge_failures": failures,
            "welcomes": len(latencies), "missing": len(sent) - len(latencies),
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "max_ms": round(max(latencies), 2) if latencies else None,
            "ack_p50_ms": percentile(acks, 0.5), "ack_p99_ms": percentile(acks, 0.99)}  # fmt: skip


def run(*, seconds: float, concurrency: int, rate: int, out: Path, processes: int, threads: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian package wrk; ops/bench installs it)")
    work = Path(tempfile.mkdtemp(prefix="grimbots-bench-wa-"))
    telegram_port, fake_port, edge_port = free_port(), free_port(), free_port()
    fake, edge = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{edge_port}"
    configure(fake)
    results: dict[str, Any] = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "concurrency": concurrency, "whatsapp_bots": WA_BOTS}  # fmt: skip
    env = Platform(work, TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram_port}", LOG_LEVEL="WARNING",
                   EVOLUTION_TYPING_MS="0")  # fmt: skip
    try:
        env.fake_telegram(telegram_port)
        env.fake_whatsapp(fake_port)
        env.edge(edge_port)
        workers = env.worker("workers", threads=threads, processes=processes)
        results["whatsapp_welcome"] = whatsapp_latency(edge, fake, rate, seconds)
        results["telegram_welcome"] = welcome_latency(env, edge, f"http://127.0.0.1:{telegram_port}", rate, seconds)
        for name in ("whatsapp_welcome", "telegram_welcome"):
            results[name]["worker_processes"], results[name]["worker_threads"] = processes, threads
        workers.stop()  # the ack runs measure the edge alone
        _flush_queues()
        scripts = {"whatsapp": work / "wa.lua", "telegram": work / "tg.lua"}
        scripts["whatsapp"].write_text(WRK_EVOLUTION)
        scripts["telegram"].write_text(WRK_SCRIPT)
        targets = {"whatsapp": f"{edge}/webhook/whatsapp/wa-0", "telegram": f"{edge}/webhook/telegram/bench-0"}
        runs: dict[str, list[dict[str, Any]]] = {"whatsapp": [], "telegram": []}
        for name, url in targets.items():
            wrk(url, 2, concurrency, scripts[name])  # warm-up
        for _ in range(ACK_ROUNDS):
            for name, url in targets.items():
                runs[name].append(wrk(url, seconds, concurrency, scripts[name]))
                _flush_queues()
        results["ack_runs"] = runs
        results["ack_whatsapp"], results["ack_telegram"] = median_run(runs["whatsapp"]), median_run(runs["telegram"])
    finally:
        env.close()
        _flush_queues()
        shutil.rmtree(work, ignore_errors=True)
    wa, tg = results["whatsapp_welcome"], results["telegram_welcome"]
    awa, atg = results["ack_whatsapp"], results["ack_telegram"]
    rows = [
        (f"inbound acked by the edge, {concurrency} connections (median of {ACK_ROUNDS})",
         f"WhatsApp (Evolution) {awa['requests_per_second']:.0f}/s (p50 {awa['p50_ms']} ms, p99 {awa['p99_ms']} ms, "
         f"non-2xx {awa['non_2xx']}) · Telegram {atg['requests_per_second']:.0f}/s (p50 {atg['p50_ms']} ms, "
         f"p99 {atg['p99_ms']} ms, non-2xx {atg['non_2xx']})"),
        (f"first message → welcome at {rate}/s for {seconds:.0f} s, {processes}×{threads} workers",
         f"WhatsApp p50 {wa['p50_ms']} ms, p99 {wa['p99_ms']} ms, {wa['welcomes']}/{wa['messages']} · "
         f"Telegram p50 {tg['p50_ms']} ms, p99 {tg['p99_ms']} ms, {tg['welcomes']}/{tg['updates']}"),
    ]  # fmt: skip
    report("whatsapp", results, rows, out)
    return results
