"""Ferry's benchmark harness: `python -m bench [--quick] [--out DIR]`.

A real local Kafka (or `$KAFKA_BOOTSTRAP`), Ferry as a separate process, a trivial
grpc.aio echo server as the gRPC ceiling, and load generators in separate processes.
Every scenario runs side by side with its baseline in the same run; see docs/benchmarks.md.
"""
