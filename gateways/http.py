"""What every gateway's HTTP has in common: one pooled httpx client per process and outside
system, every timeout explicit; and network failures translated into a gateway's own transient
error without httpx's text (it holds the URL, and some URLs hold a token)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx


def pooled_client(timeout: float, max_connections: int) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(5.0, timeout), pool=min(5.0, timeout)),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections // 2, keepalive_expiry=30
        ),
        headers={"User-Agent": "grimbots/1"},
    )


@contextmanager
def network_errors(kind: str, transient: Callable[[str], Exception]) -> Iterator[None]:
    """Timeouts and transport errors inside the block → `transient("{kind}: timed out (...)")` or
    `transient("{kind}: unreachable (...)")`."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise transient(f"{kind}: timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise transient(f"{kind}: unreachable ({type(exc).__name__})") from None
