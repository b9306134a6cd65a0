"""Ferry's test kit: what tests/, bench/ and chaos/ share to run Ferry and Kafka and to observe
them. It imports only the standard library, third-party packages and `sidecar`; it is not part
of the wheel.

Processes and waiting
    paths            the repository root, the tool cache
    ports            free loopback ports
    waiting          polling for a condition
    processes        the parent-death signal; `Children`, a registry that stops what it started
    ferry_process    `FerryProcess` (`python -m sidecar serve`), `running_ferry`, `Ferries`
    ferry_log        a log's tail; Ferry's JSON log entries

Kafka
    kafka_jars       Kafka's jars from Maven, cached
    kafka_node       one local KRaft node: its ports, config, storage, JVM; `SecuredListeners`
    kafka_cluster    `KafkaCluster`: a local KRaft cluster of such nodes, started and stopped
    kafka_local      the local cluster's CLI (``python -m testkit.kafka_local``)
    kafka_admin      topic names and creation, partition leaders
    kafka_env        ``$KAFKA_BOOTSTRAP`` or a local cluster, as one `KafkaEnv`
    kafka_restore    bringing stopped, killed or paused brokers back
    kafka_read       reading topics back as `KafkaRecord`s
    kafka_produce    producing around Ferry with a plain producer
    consumer_offsets a group's committed offsets against the partitions' ends
    delivery         what Kafka holds against what was published (per-key order, contents)

Ferry's API
    publishing       events, Publish, a bulk publish that waits for Kafka
    grpc_errors      the google.rpc details of a failed call
    wal_files        the write-ahead log's SQLite file seen from outside
    subscribe_calls  Subscriber messages, ack statuses, unary Ack/Nack/ExtendLease
    stream_client    `StreamClient`: one Subscribe stream driven from test code
    acking_worker    `AckingWorker`: acks whatever a stream delivers
    subscriber_process  a subscriber in a child process (``python -m testkit.subscriber_process``)
"""
