"""The rooms' rule (README, architecture): running services — the edge, the dashboard, the workers
and what they use — never import the operator's tooling in `ops/`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE_ROOMS = ("edge", "dash", "actors", "gateways", "catalog", "reports", "db")


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_service_room_imports_ops() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in imported(path) if n == "ops" or n.startswith("ops."))
        for room in SERVICE_ROOMS
        for path in sorted((ROOT / room).rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}
