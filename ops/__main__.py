import sys

try:
    from ops.cli import cli
except ImportError as exc:  # a python without the project's packages: say which one to use
    sys.exit(f"python -m ops: {exc}. Run it with the project's venv: .venv/bin/python -m ops ... "
             "(ops/run and ops/test create .venv).")  # fmt: skip

cli(prog_name=".venv/bin/python -m ops")
