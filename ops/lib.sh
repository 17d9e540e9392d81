# Shared set-up for ops/run and ops/test: sourced, not executed.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

can_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }

apt_install() {
  can_apt || { log "cannot install $* (needs apt-get as root); install it and retry"; return 1; }
  if [ -z "${_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    _APT_UPDATED=1
  fi
  log "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Create .venv and install the pinned requirements; a file unchanged since its last install is skipped.
setup_venv() {
  local f stamp want
  if [ ! -x "$PY" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  fi
  for f in "$@"; do
    stamp="$VENV/.installed-$(basename "$f")"
    want="$(sha256sum "$f" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
      log "installing Python packages from $f"
      "$PY" -m pip install -q --disable-pip-version-check -r "$f"
      echo "$want" >"$stamp"
    fi
  done
}

ensure_redis_server() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
}

# The directory holding initdb/pg_ctl/postgres: from PATH, else Debian's layout, else install it.
postgres_bindir() {
  local d
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return
  fi
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  apt_install postgresql >&2 || return 1
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  return 1
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_redis() {
  local port=$1 i
  for i in $(seq 1 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "redis on port $port did not start"
  return 1
}
