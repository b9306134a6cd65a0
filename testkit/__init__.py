"""Ferry's test kit: what tests/, bench/ and chaos/ share to run Ferry and Kafka and to observe
them. It imports only the standard library, third-party packages and `sidecar`; it is not part
of the wheel.

    paths            the repository root, the tool cache
    ports            free loopback ports
    processes        the parent-death signal; `Children`, a registry that stops what it started
    kafka_jars       Kafka's jars from Maven, cached
    kafka_local      a local KRaft cluster (also a CLI: ``python -m testkit.kafka_local``)
    kafka_admin      topic names and creation, partition leaders
"""
