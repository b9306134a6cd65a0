"""Ferry's Jepsen-style fault suite: workload, history, faults, a pure checker and a report.

A scenario runs a publish + subscribe workload against a real Ferry and a real Kafka while
it injects faults (kill -9, SIGTERM, broker kill/pause, disk full, network toxics, subscriber
misbehaviour, bad input, clock jumps). Every publish is recorded with its outcome (ok, fail,
unknown) in a `History`. After the faults heal, Ferry drains, a plain Kafka consumer reads the
topic from the start, every subscription is drained through Ferry, and `checker.check` proves
that nothing Ferry answered OK for is lost. `python -m chaos --full` runs every scenario long
and writes docs/reliability.md; tests/faults runs them short in CI.
"""
