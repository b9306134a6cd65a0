package dev.ferry.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.google.protobuf.ByteString;
import dev.ferry.v1.AckLevel;
import dev.ferry.v1.Event;
import dev.ferry.v1.Header;
import dev.ferry.v1.PublishBatchEntry;
import dev.ferry.v1.PublishRequest;
import dev.ferry.v1.PublishResult;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Against a running Ferry and its Kafka: publish 100 keyed events, subscribe, fail one once and
 * see it come back as attempt 2, then read all 100 from Kafka in per-key order; and publish 400
 * keyed events through the stream publisher and read them back in per-key order.
 */
class EndToEndTest {
  private static final int COUNT = 100;
  private static String ferryAddr;
  private static String kafkaBootstrap;

  @BeforeAll
  static void needsFerry() {
    ferryAddr = System.getenv("FERRY_ADDR");
    kafkaBootstrap = System.getenv("KAFKA_BOOTSTRAP");
    boolean set = notEmpty(ferryAddr) && notEmpty(kafkaBootstrap);
    if (!set) {
      System.err.println("EndToEndTest skipped: FERRY_ADDR and KAFKA_BOOTSTRAP are not set");
    }
    assumeTrue(set, "FERRY_ADDR and KAFKA_BOOTSTRAP are not set: no Ferry to test against");
  }

  private static boolean notEmpty(String s) {
    return s != null && !s.isBlank();
  }

  @Test
  void publishSubscribeRedeliverAndReadKafka() throws Exception {
    String run = "java-e2e-" + UUID.randomUUID().toString().substring(0, 8);
    String topic = run;
    List<String> ids = new ArrayList<>();
    Map<String, Integer> indexOf = new HashMap<>();

    try (FerryClient ferry = FerryClient.builder().target(ferryAddr).build()) {
      // The first half one call at a time, the second half in one batch.
      for (int i = 0; i < COUNT / 2; i++) {
        PublishResult r =
            ferry.publish(topic, bytes("payload-" + i), bytes("k" + i % 8), List.of(header(i)));
        assertTrue(r.getEventId().matches(EventIdsTest.UUID_V7), r.getEventId());
        assertFalse(r.getDuplicate());
        assertTrue(r.hasPublishTime());
        ids.add(r.getEventId());
      }
      List<Event> batch = new ArrayList<>();
      for (int i = COUNT / 2; i < COUNT; i++) {
        batch.add(
            Event.newBuilder()
                .setTopic(topic)
                .setKey(ByteString.copyFromUtf8("k" + i % 8))
                .setPayload(ByteString.copyFromUtf8("payload-" + i))
                .addHeaders(header(i))
                .build());
      }
      for (PublishBatchEntry entry : ferry.publishBatch(batch)) {
        assertTrue(entry.hasResult(), entry.toString());
        ids.add(entry.getResult().getEventId());
      }
      for (int i = 0; i < COUNT; i++) {
        indexOf.put(ids.get(i), i);
      }
      // Publishing an id again writes nothing: what makes retries safe.
      PublishResult again =
          ferry.publish(
              Event.newBuilder()
                  .setTopic(topic)
                  .setEventId(ids.get(0))
                  .setKey(ByteString.copyFromUtf8("k0"))
                  .setPayload(ByteString.copyFromUtf8("payload-0"))
                  .addHeaders(header(0))
                  .build());
      assertTrue(again.getDuplicate());
      assertEquals(ids.get(0), again.getEventId());

      PublishResult inKafka =
          ferry.publish(
              PublishRequest.newBuilder()
                  .setEvent(Event.newBuilder().setTopic(topic + "-kafka").setPayload(ByteString.EMPTY))
                  .setAckLevel(AckLevel.ACK_LEVEL_KAFKA)
                  .build());
      assertTrue(inKafka.hasKafkaPosition(), inKafka.toString());

      String failOnce = ids.get(42);
      AtomicBoolean failed = new AtomicBoolean();
      AtomicInteger redeliveryAttempt = new AtomicInteger();
      Set<String> acked = ConcurrentHashMap.newKeySet();
      CountDownLatch done = new CountDownLatch(1);
      SubscriberOptions options =
          SubscriberOptions.builder(run, List.of(topic))
              .leaseDuration(Duration.ofSeconds(10))
              .nackDelay(Duration.ofMillis(200))
              .build();
      try (Subscriber sub =
          ferry.subscriber(
              options,
              d -> {
                String id = d.getEvent().getEventId();
                if (id.equals(failOnce)) {
                  if (failed.compareAndSet(false, true)) {
                    throw new IllegalStateException("failing " + id + " once, on purpose");
                  }
                  redeliveryAttempt.set(d.getDeliveryAttempt());
                }
                acked.add(id);
                if (acked.size() == COUNT && redeliveryAttempt.get() > 0) {
                  done.countDown();
                }
              })) {
        sub.start();
        assertTrue(done.await(60, TimeUnit.SECONDS), "acked " + acked.size() + " of " + COUNT);
      }
      assertEquals(2, redeliveryAttempt.get());
      assertEquals(new HashSet<>(ids), acked);
    }

    readBackFromKafka(topic, indexOf);
  }

  @Test
  void streamPublisherKeepsEachKeysOrderInKafka() throws Exception {
    int count = 400;
    String topic = "java-e2e-stream-" + UUID.randomUUID().toString().substring(0, 8);
    List<CompletableFuture<PublishResult>> singles = new ArrayList<>();
    List<CompletableFuture<List<PublishBatchEntry>>> batches = new ArrayList<>();
    try (FerryClient ferry = FerryClient.builder().target(ferryAddr).build();
        StreamPublisher stream = ferry.streamPublisher(64)) {
      // The first half one event per request, the second in requests of 25, all pipelined; a
      // window of 64 makes publish wait for answers along the way.
      for (int i = 0; i < count / 2; i++) {
        singles.add(stream.publish(keyedEvent(topic, i)));
      }
      for (int i = count / 2; i < count; i += 25) {
        List<Event> batch = new ArrayList<>();
        for (int j = i; j < i + 25; j++) {
          batch.add(keyedEvent(topic, j));
        }
        batches.add(stream.publishBatch(batch));
      }
      stream.flush();
    }
    Map<String, Integer> indexOf = new HashMap<>();
    for (CompletableFuture<PublishResult> f : singles) {
      PublishResult r = f.get(); // done: flush() waited for it
      assertFalse(r.getDuplicate());
      indexOf.put(r.getEventId(), indexOf.size());
    }
    for (CompletableFuture<List<PublishBatchEntry>> f : batches) {
      for (PublishBatchEntry entry : f.get()) {
        assertTrue(entry.hasResult(), entry.toString());
        indexOf.put(entry.getResult().getEventId(), indexOf.size());
      }
    }
    assertEquals(count, indexOf.size());
    readBackFromKafka(topic, indexOf);
  }

  private static Event keyedEvent(String topic, int i) {
    return Event.newBuilder()
        .setTopic(topic)
        .setKey(ByteString.copyFromUtf8("k" + i % 8))
        .setPayload(ByteString.copyFromUtf8("payload-" + i))
        .addHeaders(header(i))
        .build();
  }

  /** Reads every event of {@code indexOf} (id to index) back and checks each key's order. */
  private void readBackFromKafka(String topic, Map<String, Integer> indexOf) {
    Properties props = new Properties();
    props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, kafkaBootstrap);
    props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    Map<String, List<Integer>> perKey = new HashMap<>(); // first copies, in partition order
    Set<String> seen = new HashSet<>();
    try (KafkaConsumer<byte[], byte[]> consumer =
        new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      List<TopicPartition> partitions =
          consumer.partitionsFor(topic, Duration.ofSeconds(30)).stream()
              .map(p -> new TopicPartition(topic, p.partition()))
              .toList();
      consumer.assign(partitions);
      consumer.seekToBeginning(partitions);
      long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
      while (seen.size() < indexOf.size() && System.nanoTime() < until) {
        for (ConsumerRecord<byte[], byte[]> rec : consumer.poll(Duration.ofMillis(500))) {
          String id = string(rec.headers().lastHeader("ferry-event-id").value());
          Integer i = indexOf.get(id);
          assertTrue(i != null, "unknown event " + id);
          assertEquals("payload-" + i, string(rec.value()));
          assertEquals("k" + i % 8, string(rec.key()));
          assertEquals(String.valueOf(i), string(rec.headers().lastHeader("n").value()));
          if (seen.add(id)) {
            perKey.computeIfAbsent(string(rec.key()), k -> new ArrayList<>()).add(i);
          }
        }
      }
    }
    assertEquals(indexOf.keySet(), seen);
    perKey.forEach(
        (key, order) ->
            assertEquals(order.stream().sorted().toList(), order, "order of key " + key));
    assertEquals(8, perKey.size());
  }

  private static Header header(int i) {
    return Header.newBuilder().setKey("n").setValue(ByteString.copyFromUtf8("" + i)).build();
  }

  private static byte[] bytes(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }

  private static String string(byte[] b) {
    return b == null ? null : new String(b, StandardCharsets.UTF_8);
  }

}
