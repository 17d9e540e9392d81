"""`python -m ops bench whatsapp`: the WhatsApp channel beside Telegram, in one run on this machine.

1. Inbound messages per second acked by the edge: wrk posting Evolution `messages.upsert` bodies
   (each with a new message id, the bearer secret checked) and, for comparison, Telegram updates
   to the same edge, alone (no workers: the edge's own cost), three alternating runs each, median.
2. First message → welcome latency (p50/p99): new numbers writing to Evolution bots at --rate per
   second (below every configured limit: rate_per_minute 6000 per number), measured from the post
   to the fake WhatsApp's receipt of the welcome; then /start → welcome on Telegram bots at the
   same rate with the same workers. Evolution's typing delay is set to 0 for the run (it adds
   exactly itself to every welcome).
3. Buyers behind a broadcast at WhatsApp's default rate (10 a minute): a broadcast to 300 leads
   under way on a 10/min Evolution number, then a new buyer every 45 s writes "oi" and, once
   welcomed, "1": the wait for the welcome and for the code's messages (the BR Code and its QR
   image), and the broadcast's pace meanwhile (CONTRACT §12: welcome within 10 s, code within 20 s).
   A buyer costs 4 messages (welcome; the code's text, the code, its QR image): a 10/min number
   serves at most 2.5 buyers a minute (then none is left for marketing): closer, buyers queue behind
   each other, which is not what this measures.

Uses REDIS_URL and DATABASE_URL as given (ops/bench starts throwaway ones); results go to --out
with the machine's figures."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ops.benchmarks.driver import (
    ACK_ROUNDS,
    BOTS,
    WRK_SCRIPT,
    _drive,
    _flush_queues,
    machine,
    median_run,
    percentile,
    report,
    seller_config,
    welcome_latency,
    wrk,
)
from ops.procs import Platform, free_port, wait_until

WA_BOTS = 20
SECRET = "bench-wa-secret"
SLOW = "wa-slow"  # WhatsApp's default 10 a minute, selling one offer
SLOW_LEADS = 300
PROMO = "Promo relâmpago de Natal"
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
    import catalog
    from db.database import init_db
    from db.migrate import migrate
    from db.models import Gateway

    data = seller_config(BOTS, {"id": "vip", "label": "VIP", "price": "9.90", "delivery_link": "https://x/p"})
    data["bots"] += [{"id": f"wa-{i}", "channel": "evolution", "number": f"551190000{i:04d}",
                      "webhook_secret": SECRET, "evolution_url": fake, "instance": f"bench-{i}", "apikey": "K",
                      "rate_per_minute": 6000, "welcome": {"text": "Olá! Escolha seu plano:"}}
                     for i in range(WA_BOTS)]  # fmt: skip
    data["bots"].append({"id": SLOW, "channel": "evolution", "number": "5511900009999", "webhook_secret": SECRET,
                         "evolution_url": fake, "instance": "bench-slow", "apikey": "K", "gateway": "bench-gw",
                         "offers": [{"id": "vip", "label": "VIP", "price": "9.90", "delivery_link": "https://x/p"}],
                         "welcome": {"text": "Olá! Escolha seu plano:"}})  # fmt: skip
    database = init_db()
    migrate(database)
    with database.connection_context():
        known = {g.id for g in Gateway.select(Gateway.id)}
        catalog.apply(catalog.parse(data, known))


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


def buyers_behind_a_broadcast(edge: str, fake: str, buyers: int = 3, spacing: float = 45.0) -> dict[str, Any]:
    """Phase 3: new buyers on the 10/min number while a broadcast to its leads is under way."""
    from actors import broadcasts
    from catalog.snapshot import load_bots
    from db.database import init_db
    from db.models import Lead

    base = 5511_7000_0000 + int(time.time()) % 10_000 * 10_000
    database = init_db()
    with database.connection_context():
        Lead.insert_many([{"bot": SLOW, "person_id": base + n, "chat_id": base + n, "first_name": "L"}
                          for n in range(SLOW_LEADS)]).execute()  # fmt: skip
        broadcasts.create(load_bots()[SLOW], "all", PROMO)
        broadcasts.dispatch()  # the clock's job, done here: the broadcast's lanes
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}

    def calls() -> list[dict[str, Any]]:
        return [c for c in httpx.get(f"{fake}/_calls", timeout=30).json() if c.get("instance") == "bench-slow"]

    def to(number: str) -> list[dict[str, Any]]:
        return [c for c in calls() if str(c["params"].get("number")) == number]

    def say(number: str, text: str, message_id: str) -> float:
        data = {"key": {"remoteJid": f"{number}@s.whatsapp.net", "fromMe": False, "id": message_id},
                "pushName": "B", "message": {"conversation": text}}  # fmt: skip
        body = json.dumps({"event": "messages.upsert", "instance": "bench-slow", "data": data}).encode()
        said = time.time()
        httpx.post(f"{edge}/webhook/whatsapp/{SLOW}", content=body, headers=headers, timeout=30).raise_for_status()
        return said

    wait_until(lambda: sum(c["params"].get("text") == PROMO for c in calls()) >= 3, 60, "the broadcast under way",
               interval=0.5)  # fmt: skip
    welcome_waits: list[float] = []
    code_waits: list[float] = []
    missing = 0
    for k in range(buyers):
        started = time.time()
        number = str(base + SLOW_LEADS + k)
        said = say(number, "oi", f"SLOW-{number}-1")
        try:
            welcome = wait_until(lambda: to(number), 60, "the welcome", interval=0.1)[0]  # noqa: B023
            welcome_waits.append((welcome["at"] - said) * 1000)
            chose = say(number, "1", f"SLOW-{number}-2")

            def code_parts() -> list[dict[str, Any]]:
                parts = to(number)[1:]  # noqa: B023
                has_code = any("000201" in str(c["params"].get("text") or "") for c in parts)
                has_qr = any(c["params"].get("mediatype") == "image" for c in parts)
                return parts if has_code and has_qr else []

            parts = wait_until(code_parts, 90, "the code's messages", interval=0.1)
            code_waits.append((max(c["at"] for c in parts) - chose) * 1000)
        except AssertionError:
            missing += 1
        time.sleep(max(0.0, started + spacing - time.time()))
    promos = [c["at"] for c in calls() if c["params"].get("text") == PROMO]
    gaps = [b - a for a, b in itertools.pairwise(promos)]
    most = max(sum(1 for t in promos if s <= t < s + 60) for s in promos) if promos else 0
    return {
        "rate_per_minute": 10, "broadcast_leads": SLOW_LEADS, "buyers": buyers, "spacing_s": spacing,
        "missing": missing, "welcome_p50_ms": percentile(welcome_waits, 0.5),
        "welcome_max_ms": round(max(welcome_waits), 1) if welcome_waits else None,
        "code_p50_ms": percentile(code_waits, 0.5),
        "code_max_ms": round(max(code_waits), 1) if code_waits else None,
        "broadcast_sent": len(promos), "broadcast_min_gap_s": round(min(gaps), 2) if gaps else None,
        "broadcast_max_in_60s": most,
    }  # fmt: skip


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
        side = env.worker("side", queues=("payments", "broadcasts"), threads=8)  # codes; the broadcast's lanes
        results["whatsapp_welcome"] = whatsapp_latency(edge, fake, rate, seconds)
        results["telegram_welcome"] = welcome_latency(env, edge, f"http://127.0.0.1:{telegram_port}", rate, seconds)
        for name in ("whatsapp_welcome", "telegram_welcome"):
            results[name]["worker_processes"], results[name]["worker_threads"] = processes, threads
        results["behind_broadcast"] = buyers_behind_a_broadcast(edge, fake)
        workers.stop()  # the ack runs measure the edge alone
        side.stop()
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
    bb = results["behind_broadcast"]
    rows.append((f"10/min number, broadcast to {bb['broadcast_leads']} under way, {bb['buyers']} new buyers "
                 f"{bb['spacing_s']:.0f} s apart",
                 f"welcome p50 {bb['welcome_p50_ms']} ms, max {bb['welcome_max_ms']} ms · code's messages p50 "
                 f"{bb['code_p50_ms']} ms, max {bb['code_max_ms']} ms · missing {bb['missing']} · broadcast "
                 f"{bb['broadcast_sent']} sent, min gap {bb['broadcast_min_gap_s']} s, "
                 f"at most {bb['broadcast_max_in_60s']} in 60 s"))  # fmt: skip
    report("whatsapp", results, rows, out)
    return results
