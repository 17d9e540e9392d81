"""SECRET_KEY: the placeholder is refused; a rotation keeps credentials and click tokens working
through SECRET_KEY_FALLBACKS until `ops rotate-credentials` has re-encrypted them. Each step in a
process of its own, as an operator would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ops.procs import ROOT

EXAMPLE = ROOT / "examples" / "demo.toml"


def run(tmp_path: Path, *args: str, key: str, fallbacks: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SECRET_KEY": key, "SECRET_KEY_FALLBACKS": fallbacks,
           "DATABASE_URL": f"sqlite:///{tmp_path}/rotation.sqlite3", "GRIMBOTS_VAR_DIR": str(tmp_path)}  # fmt: skip
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


READ = (
    "from db.database import init_db; init_db(); from catalog.snapshot import load_bots; "
    "print(load_bots()['demo'].token)"
)


def test_the_placeholder_secret_key_is_refused(tmp_path: Path) -> None:
    out = run(tmp_path, "-m", "ops", "migrate", key="CHANGE-ME-long-random")
    assert out.returncode != 0 and "SECRET_KEY is still the placeholder" in out.stderr


def test_a_rotated_secret_key_keeps_credentials_and_click_tokens(tmp_path: Path) -> None:
    old, new = "old-key-" + "o" * 40, "new-key-" + "n" * 40
    assert run(tmp_path, "-m", "ops", "apply", str(EXAMPLE), key=old).returncode == 0
    token = run(tmp_path, "-c", "import clicks; print(clicks.new_token())", key=old).stdout.strip()
    verify = f"import clicks; print(clicks.verify_token({token!r}))"

    assert run(tmp_path, "-c", READ, key=new).returncode != 0  # the new key alone cannot read them
    assert run(tmp_path, "-c", verify, key=new).stdout.strip() == "False"
    assert run(tmp_path, "-c", READ, key=new, fallbacks=old).stdout.strip() == "123456:TEST"
    assert run(tmp_path, "-c", verify, key=new, fallbacks=old).stdout.strip() == "True"

    rotated = run(tmp_path, "-m", "ops", "rotate-credentials", key=new, fallbacks=old)
    assert rotated.returncode == 0 and "re-encrypted the credentials of 2" in rotated.stdout
    assert run(tmp_path, "-c", READ, key=new).stdout.strip() == "123456:TEST"  # the old key can go
