"""The deploy files agree with the code they run."""

import re
from pathlib import Path

import yaml

from actors import workers  # noqa: F401 - declares every actor
from actors.broker import broker

DEPLOY = Path(__file__).resolve().parents[2] / "ops" / "deploy"


def test_worker_unit_outlasts_the_longest_actor_time_limit() -> None:
    longest_ms = max(broker.get_actor(name).options["time_limit"] for name in broker.get_declared_actors())
    unit = (DEPLOY / "systemd" / "grimbots-worker@.service").read_text()
    stop_seconds = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))  # type: ignore[union-attr]
    assert stop_seconds * 1000 > longest_ms
    assert "Restart=on-failure" in unit


def test_alert_rules_parse_and_use_exported_series() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {"GrimbotsQueueBacklog", "GrimbotsDeadLetters", "GrimbotsWorkerErrorRate", "GrimbotsNoWorkerHeartbeat",
            "GrimbotsEdge5xx"} <= names  # fmt: skip
    exported = {"grimbots_queue_oldest_ready_age_seconds", "grimbots_queue_dead", "grimbots_queue_ready",
                "grimbots_worker_messages_total", "grimbots_edge_requests_total", "grimbots_metrics_redis_up",
                "grimbots_channel_rate_waits_total", "grimbots_pixel_events_total", "grimbots_owed_total",
                "grimbots_deliveries_total", "grimbots_clicks_total", "grimbots_subscription_errors_total",
                "grimbots_pool_healthy_bots", "grimbots_bot_healthy", "grimbots_whatsapp_failed_total"}  # fmt: skip
    for rule in rules:
        for series in re.findall(r"grimbots_[a-z_]+", rule["expr"]):
            assert series in exported, (rule["alert"], series)
