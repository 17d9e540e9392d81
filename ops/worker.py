"""`python -m ops.worker --queues Q... --processes N --threads T`: Dramatiq's worker CLI for our
actors, with polling tuned for latency.

Dramatiq reads two knobs from the environment when it is imported, so they are set here first:
- dramatiq_worker_timeout: the most an idle (or prefetch-saturated) consumer sleeps between
  fetches. The default, 1 s, is added to the first message after any quiet spell; 100 ms costs
  about ten small Redis calls a second per queue.
- dramatiq_queue_prefetch: messages a process holds ahead of its threads. Dramatiq's default,
  2 per thread, saturates under a burst and then the consumer sleeps instead of fetching."""

from __future__ import annotations

import os
import sys


def main() -> None:
    threads = 8
    if "--threads" in sys.argv[1:-1]:
        threads = int(sys.argv[sys.argv.index("--threads") + 1])
    os.environ.setdefault("dramatiq_worker_timeout", "100")
    os.environ.setdefault("dramatiq_queue_prefetch", str(threads * 8))
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    args = make_argument_parser().parse_args(["actors.workers", *sys.argv[1:]])
    sys.exit(dramatiq_main(args))


if __name__ == "__main__":
    main()
