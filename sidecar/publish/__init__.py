"""The publish path: validated events into the log, and waiting for Kafka when asked."""
