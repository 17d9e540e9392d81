"""The rooms' rules (docs/architecture.md): running services — the edge, the panel, the workers
and what they use — never import the operator's tooling in `ops/`; no module imports itself back
through others; stages speak to channels, not to Telegram."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE_ROOMS = ("edge", "panel", "actors", "gateways", "catalog", "accounts", "reports", "db")


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


# What each room may not import: the rooms above it (gateways talk to the outside and know nothing of
# our storage or stages; the database layer knows no configuration, stage or service).
BELOW = {
    "gateways": ("db", "catalog", "accounts", "actors", "reports", "edge", "panel", "ops"),
    "db": ("gateways", "catalog", "accounts", "actors", "reports", "edge", "panel", "ops"),
    "catalog": ("accounts", "actors", "reports", "edge", "panel", "ops"),
    "accounts": ("actors", "reports", "edge", "panel", "ops"),
    "reports": ("actors", "edge", "panel", "ops"),
}


def test_each_room_imports_only_the_rooms_below_it() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in imported(path) if n.split(".")[0] in above)
        for room, above in BELOW.items()
        for path in sorted((ROOT / room).rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_no_service_room_imports_ops() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in imported(path) if n == "ops" or n.startswith("ops."))
        for room in SERVICE_ROOMS
        for path in sorted((ROOT / room).rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


PROJECT = (
    "accounts",
    "actors",
    "catalog",
    "clicks",
    "panel",
    "db",
    "edge",
    "gateways",
    "ops",
    "reports",
    "settings",
    "telemetry",
)
STAGES = ("updates", "funnel", "payments", "delivery", "pixel", "subscriptions", "broadcasts", "followups", "redrive",
          "statuses")  # fmt: skip
BOT_API = re.compile(
    r"^(send[A-Z]\w*|answerCallbackQuery|(approve|decline)ChatJoinRequest|(ban|unban)ChatMember|"
    r"(create|revoke|edit)ChatInviteLink|getMe|setWebhook|deleteWebhook|edit\w+|getChat\w*)$"
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_graph() -> dict[str, set[str]]:
    """Each project module → the project modules it imports (a `from package import module` counts
    the module)."""
    paths = [p for p in ROOT.rglob("*.py") if p.relative_to(ROOT).parts[0] in PROJECT
             or p.relative_to(ROOT).parts[0] in {f"{n}.py" for n in PROJECT}]  # fmt: skip
    modules = {module_name(p): p for p in paths if ".venv" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    """Imports inside functions count: a lazy import is still a dependency."""
    assert cycles(project_graph()) == []


def test_no_stage_names_a_bot_api_method_or_imports_telegram() -> None:
    """Stages speak to a channel (gateways/channel.py); what Telegram calls things is its gateway's."""
    found: dict[str, list[str]] = {}
    for stage in STAGES:
        path = ROOT / "actors" / f"{stage}.py"
        tree = ast.parse(path.read_text(), str(path))
        names = [n for n in imported(path) if n == "gateways.telegram"]
        strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)]
        names += [value for value in strings if isinstance(value, str) and BOT_API.match(value)]
        if names:
            found[stage] = names
    assert found == {}


def test_every_channel_kind_has_a_builder_and_the_schema_takes_only_registered_kinds() -> None:
    from actors.channels import BUILDERS
    from catalog.validate import CHANNELS
    from gateways.channel_kinds import KINDS

    assert set(BUILDERS) == set(KINDS) == set(CHANNELS)
    assert {kind.route for kind in KINDS.values()} == {"telegram", "whatsapp"}  # CONTRACT §2's webhook routes
