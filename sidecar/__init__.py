"""Ferry: a gRPC sidecar for reliable, at-least-once publish and subscribe on Apache Kafka."""

__version__ = "0.1.0"
