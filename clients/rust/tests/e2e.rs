//! End to end against a running Ferry (FERRY_ADDR) and its Kafka (KAFKA_BOOTSTRAP); each test
//! skips, saying so on stderr, when either is unset. Topics and subscriptions start with
//! `rust-` and a random suffix per run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_client::{AckLevel, CancellationToken, Client, Code, Delivery, Event, StartPosition};
use rskafka::client::ClientBuilder as KafkaClientBuilder;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};

const COUNT: usize = 100;
/// Events of the stream publisher's test.
const STREAM_COUNT: usize = 400;
const KEYS: usize = 8;

/// FERRY_ADDR and KAFKA_BOOTSTRAP, or `None` after saying why the test is skipped.
fn servers(test: &str) -> Option<(String, String)> {
    match (
        std::env::var("FERRY_ADDR"),
        std::env::var("KAFKA_BOOTSTRAP"),
    ) {
        (Ok(ferry), Ok(kafka)) if !ferry.is_empty() && !kafka.is_empty() => Some((ferry, kafka)),
        _ => {
            // Straight to stderr: the test harness would swallow println! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: set FERRY_ADDR and KAFKA_BOOTSTRAP to run it"
            );
            None
        }
    }
}

fn run_id() -> String {
    format!("{:08x}", fastrand::u32(..))
}

fn event_id(run: &str, i: usize) -> String {
    format!("rust-e2e-{run}-{i}")
}

/// Event `i` of a run: key `k{i % KEYS}`, payload `payload-{i}`, header `run`.
fn keyed_event(topic: &str, run: &str, i: usize) -> Event {
    Event::new(topic, format!("payload-{i}"))
        .key(format!("k{}", i % KEYS))
        .header("run", run)
        .event_id(event_id(run, i))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_redeliver_and_read_back_from_kafka() {
    let Some((ferry, kafka)) = servers("publish_subscribe_redeliver_and_read_back_from_kafka")
    else {
        return;
    };
    let run = run_id();
    let topic = format!("rust-e2e-{run}");
    let client = Client::builder().addr(&ferry).build().unwrap();
    let event = |i: usize| keyed_event(&topic, &run, i);
    // The first half one call at a time, the second half in one batch.
    for i in 0..COUNT / 2 {
        let result = client.publish(event(i)).await.unwrap();
        assert_eq!(result.event_id, event_id(&run, i));
        assert!(!result.duplicate);
        assert!(result.publish_time.is_some());
    }
    let batch = client
        .publish_batch((COUNT / 2..COUNT).map(event))
        .await
        .unwrap();
    assert_eq!(batch.len(), COUNT / 2);
    for (i, result) in (COUNT / 2..).zip(batch) {
        assert_eq!(result.unwrap().event_id, event_id(&run, i));
    }
    // A publish retried after an answer that got lost is harmless: same id, nothing new.
    let again = client.publish(event(3)).await.unwrap();
    assert!(again.duplicate);

    // Subscribe; the handler fails `chosen` once, so it must come back with attempt 2.
    let chosen = event_id(&run, 37);
    let attempts: Arc<Mutex<HashMap<String, Vec<i32>>>> = Arc::default();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = CancellationToken::new();
    let handler = {
        let (attempts, acked, stop, chosen) = (
            attempts.clone(),
            acked.clone(),
            stop.clone(),
            chosen.clone(),
        );
        move |d: Delivery| {
            attempts
                .lock()
                .unwrap()
                .entry(d.event_id.clone())
                .or_default()
                .push(d.delivery_attempt);
            let result = if d.event_id == chosen && d.delivery_attempt == 1 {
                Err(format!("{} fails its first delivery", d.event_id))
            } else {
                let mut acked = acked.lock().unwrap();
                acked.insert(d.event_id.clone());
                if acked.len() == COUNT {
                    stop.cancel();
                }
                Ok(())
            };
            async move { result }
        }
    };
    let subscriber = client
        .subscriber(format!("rust-e2e-{run}"), [topic.clone()])
        .start_position(StartPosition::Earliest)
        .nack_delay(Duration::from_millis(200));
    tokio::time::timeout(Duration::from_secs(90), subscriber.run(stop, handler))
        .await
        .expect("not every event was delivered and acked in 90 s")
        .unwrap();

    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(
        attempts[&chosen],
        [1, 2],
        "the failed event was not redelivered as attempt 2"
    );
    let expected: HashSet<String> = (0..COUNT).map(|i| event_id(&run, i)).collect();
    assert_eq!(*acked.lock().unwrap(), expected);

    // Read the topic back with a plain Kafka client.
    read_back_and_check(&kafka, &topic, &run, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_publisher_publishes_keyed_events_read_back_from_kafka() {
    let Some((ferry, kafka)) =
        servers("stream_publisher_publishes_keyed_events_read_back_from_kafka")
    else {
        return;
    };
    let run = run_id();
    let topic = format!("rust-e2e-stream-{run}");
    let client = Client::builder().addr(&ferry).build().unwrap();
    // A window smaller than the run, so that publishing waits for answers along the way.
    let publisher = client.stream_publisher().max_unanswered(64).start();

    // One request per event, then the last ones as one request of many events.
    let batched = STREAM_COUNT - 50;
    let mut handles = Vec::new();
    for i in 0..batched {
        handles.push(publisher.publish(keyed_event(&topic, &run, i)).await);
    }
    let batch = publisher
        .publish_batch((batched..STREAM_COUNT).map(|i| keyed_event(&topic, &run, i)))
        .await;
    for (i, handle) in handles.into_iter().enumerate() {
        let result = handle.await.unwrap();
        assert_eq!(result.event_id, event_id(&run, i));
        assert!(!result.duplicate && result.sequence > 0, "{result:?}");
    }
    let batch = batch.await.unwrap();
    assert_eq!(batch.len(), STREAM_COUNT - batched);
    for (i, result) in (batched..).zip(batch) {
        assert_eq!(result.unwrap().event_id, event_id(&run, i));
    }
    // A resend of a logged event writes nothing new.
    let again = publisher.publish(keyed_event(&topic, &run, 7)).await;
    assert!(again.await.unwrap().duplicate);
    publisher.close().await;

    let expected: HashSet<String> = (0..STREAM_COUNT).map(|i| event_id(&run, i)).collect();
    read_back_and_check(&kafka, &topic, &run, &expected).await;
}

/// Reads `topic` back from Kafka until it holds every id of `expected` (Ferry forwards in the
/// background; 90 s at most) and checks every record: key, payload and `run` header of its
/// event, no id that was not published, and per key the first copies in publish order (a
/// duplicate from a resend comes after its first copy).
async fn read_back_and_check(kafka: &str, topic: &str, run: &str, expected: &HashSet<String>) {
    let kafka = KafkaClientBuilder::new(vec![kafka.to_string()])
        .build()
        .await
        .unwrap();
    let give_up = Instant::now() + Duration::from_secs(90);
    loop {
        let found = read_topic(&kafka, topic, run).await;
        assert!(
            found.is_subset(expected),
            "Kafka holds events that were not published: {:?}",
            found.difference(expected).collect::<Vec<_>>()
        );
        if found == *expected {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "only {} of {} events reached Kafka in 90 s",
            found.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await; // the poll interval
    }
}

/// The event ids in `topic` (each once), checking every record as it goes.
async fn read_topic(kafka: &rskafka::client::Client, topic: &str, run: &str) -> HashSet<String> {
    let topics = kafka.list_topics().await.unwrap();
    let Some(partitions) = topics
        .iter()
        .find(|t| t.name == topic)
        .map(|t| &t.partitions)
    else {
        return HashSet::new(); // not created yet: nothing forwarded so far
    };
    let mut found = HashSet::new();
    for &partition in partitions {
        let pc = kafka
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .unwrap();
        let (mut offset, end) = (
            pc.get_offset(OffsetAt::Earliest).await.unwrap(),
            pc.get_offset(OffsetAt::Latest).await.unwrap(),
        );
        // Per key, the index of the newest event seen: first copies must come in publish order.
        let mut last: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        while offset < end {
            let (records, _) = pc.fetch_records(offset, 1..1_000_000, 1_000).await.unwrap();
            for r in records {
                offset = r.offset + 1;
                let id = String::from_utf8(r.record.headers["ferry-event-id"].clone()).unwrap();
                let i: usize = id.rsplit('-').next().unwrap().parse().unwrap();
                let key = r.record.key.clone().unwrap();
                assert_eq!(key, format!("k{}", i % KEYS).into_bytes(), "{id}");
                assert_eq!(
                    r.record.value.as_deref(),
                    Some(format!("payload-{i}").as_bytes()),
                    "{id}"
                );
                assert_eq!(
                    r.record.headers.get("run").map(Vec::as_slice),
                    Some(run.as_bytes()),
                    "{id}"
                );
                if !found.insert(id.clone()) {
                    continue; // a duplicate from a resend comes after its first copy
                }
                if let Some(&before) = last.get(&key) {
                    assert!(
                        i > before,
                        "{id} at offset {} comes after event {before} of its key",
                        r.offset
                    );
                }
                last.insert(key, i);
            }
        }
    }
    found
}

#[tokio::test]
async fn ferry_errors_surface_with_code_and_reason() {
    let Some((ferry, _)) = servers("ferry_errors_surface_with_code_and_reason") else {
        return;
    };
    let client = Client::builder().addr(&ferry).build().unwrap();

    let started = std::time::Instant::now();
    let err = client.publish(Event::new("..", "x")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.reason()),
        (Code::InvalidArgument, Some("FIELD_INVALID")),
        "{err}"
    );
    assert!(
        err.field_violations()
            .iter()
            .any(|v| v.field.contains("topic")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "INVALID_ARGUMENT was retried"
    );

    let err = client
        .subscriber("rust-bad name!", ["rust-topic"])
        .run(CancellationToken::new(), |_| async { Ok::<(), String>(()) })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.reason()),
        (Code::InvalidArgument, Some("FIELD_INVALID")),
        "{err}"
    );
}

#[tokio::test]
async fn ack_level_kafka_answers_with_the_kafka_position() {
    let Some((ferry, _)) = servers("ack_level_kafka_answers_with_the_kafka_position") else {
        return;
    };
    let client = Client::builder()
        .addr(&ferry)
        .ack_level(AckLevel::Kafka)
        .build()
        .unwrap();
    let topic = format!("rust-kafka-ack-{}", run_id());
    let first = client
        .publish(Event::new(&topic, "a").key("k"))
        .await
        .unwrap();
    let second = client
        .publish(Event::new(&topic, "b").key("k"))
        .await
        .unwrap();
    let (p1, p2) = (
        first.kafka_position.unwrap(),
        second.kafka_position.unwrap(),
    );
    assert_eq!(p1.partition, p2.partition);
    assert!(p2.offset > p1.offset);
    // Ids the client assigned are UUIDv7.
    assert_eq!(
        uuid::Uuid::parse_str(&first.event_id)
            .unwrap()
            .get_version_num(),
        7
    );
}
