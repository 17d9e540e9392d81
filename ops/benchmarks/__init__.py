"""The benchmarks behind `ops/bench MODE` (`python -m ops bench MODE`): one module per benchmark
(`edge`, `journeys`, `followups`, `subscriptions`, `broadcast`, `whatsapp`) and their shared driver
and report writer (`driver`). Results go to var/bench/ with the machine's figures."""
