package dev.ferry.client;

import static dev.ferry.client.Fakes.error;
import static dev.ferry.client.Fakes.retryAfter;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.ferry.v1.Event;
import dev.ferry.v1.Failure;
import dev.ferry.v1.PublishBatchEntry;
import dev.ferry.v1.PublishResult;
import dev.ferry.v1.PublishStreamAnswer;
import dev.ferry.v1.PublishStreamRequest;
import dev.ferry.v1.PublishStreamResponse;
import dev.ferry.v1.PublisherGrpc;
import io.grpc.Status.Code;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The stream publisher against an in-process fake PublishStream that the test answers by hand:
 * every request the fake reads waits in {@link #received} for the test to answer it (or not).
 */
class StreamPublisherTest {
  /** Long enough never to be reached on a loaded machine; only a failing test waits for it. */
  private static final long WAIT_S = 30;

  private final BlockingQueue<Received> received = new LinkedBlockingQueue<>();
  private final AtomicInteger streams = new AtomicInteger();
  private final List<FakeStream> halfClosed = new ArrayList<>();
  private Fakes fakes;

  /** One PublishStream call on the fake server. */
  private final class FakeStream {
    final int number;
    final StreamObserver<PublishStreamResponse> out;

    FakeStream(int number, StreamObserver<PublishStreamResponse> out) {
      this.number = number;
      this.out = out;
    }

    synchronized void send(PublishStreamAnswer a) {
      out.onNext(PublishStreamResponse.newBuilder().addAnswers(a).build());
    }

    synchronized void end(StatusRuntimeException e) {
      out.onError(e);
    }

    synchronized void complete() {
      out.onCompleted();
    }
  }

  /** A request as the fake read it, on the stream it came on. */
  private record Received(FakeStream stream, PublishStreamRequest request) {
    long id() {
      return request.getRequestId();
    }

    List<String> eventIds() {
      return request.getEventsList().stream().map(Event::getEventId).toList();
    }

    /** Answers every event OK, with sequence 100 * request id + index. */
    void ok() {
      PublishStreamAnswer.Builder r = PublishStreamAnswer.newBuilder().setRequestId(id());
      for (int i = 0; i < request.getEventsCount(); i++) {
        r.addEntries(
            PublishBatchEntry.newBuilder()
                .setResult(
                    PublishResult.newBuilder()
                        .setEventId(request.getEvents(i).getEventId())
                        .setSequence(100 * id() + i)));
      }
      stream.send(r.build());
    }

    void refuse(Failure failure, String... assignedEventIds) {
      stream.send(
          PublishStreamAnswer.newBuilder()
              .setRequestId(id())
              .setError(failure)
              .addAllAssignedEventIds(List.of(assignedEventIds))
              .build());
    }
  }

  private final PublisherGrpc.PublisherImplBase fake =
      new PublisherGrpc.PublisherImplBase() {
        @Override
        public StreamObserver<PublishStreamRequest> publishStream(
            StreamObserver<PublishStreamResponse> out) {
          FakeStream stream = new FakeStream(streams.incrementAndGet(), out);
          // Answers to a cancelled call are dropped instead of throwing.
          ((ServerCallStreamObserver<PublishStreamResponse>) out).setOnCancelHandler(() -> {});
          return new StreamObserver<>() {
            @Override
            public void onNext(PublishStreamRequest r) {
              received.add(new Received(stream, r));
            }

            @Override
            public void onError(Throwable t) {}

            @Override
            public void onCompleted() {
              // Like Ferry once every request is answered: the stream ends OK.
              synchronized (halfClosed) {
                halfClosed.add(stream);
              }
              stream.complete();
            }
          };
        }
      };

  private FerryClient client(RetryPolicy policy) throws Exception {
    fakes = new Fakes(fake);
    return FerryClient.builder().channel(fakes.channel).retryPolicy(policy).build();
  }

  private FerryClient client() throws Exception {
    return client(RetryPolicy.DEFAULT);
  }

  @AfterEach
  void stopServer() {
    if (fakes != null) {
      fakes.close();
    }
  }

  private Received next() throws InterruptedException {
    Received r = received.poll(WAIT_S, TimeUnit.SECONDS);
    assertNotNull(r, "no request reached the fake in " + WAIT_S + " s");
    return r;
  }

  private List<Received> next(int n) throws InterruptedException {
    List<Received> rs = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      rs.add(next());
    }
    return rs;
  }

  private static <T> T get(CompletableFuture<T> f) throws Exception {
    return f.get(WAIT_S, TimeUnit.SECONDS);
  }

  private static FerryException failure(CompletableFuture<?> f) {
    ExecutionException e =
        assertThrows(ExecutionException.class, () -> f.get(WAIT_S, TimeUnit.SECONDS));
    return assertInstanceOf(FerryException.class, e.getCause());
  }

  private static Event event() {
    return Event.newBuilder().setTopic("java-unit").build();
  }

  private static Failure refusal(Code code, String reason) {
    return Failure.newBuilder().setCode(code.value()).setReason(reason).setMessage("fake").build();
  }

  @Test
  void answersAreMatchedByRequestIdInAnyOrder() throws Exception {
    try (FerryClient ferry = client();
        StreamPublisher stream = ferry.streamPublisher()) {
      CompletableFuture<PublishResult> first = stream.publish(event());
      CompletableFuture<List<PublishBatchEntry>> batch =
          stream.publishBatch(List.of(event(), event().toBuilder().setEventId("mine").build()));
      CompletableFuture<PublishResult> third = stream.publish(event());

      List<Received> rs = next(3);
      // Sent at once, in publish order, on one stream, every event with its id already set.
      assertEquals(List.of(1L, 2L, 3L), rs.stream().map(Received::id).toList());
      assertTrue(rs.stream().allMatch(r -> r.stream().number == 1));
      assertTrue(rs.get(0).eventIds().get(0).matches(EventIdsTest.UUID_V7));
      assertTrue(rs.get(1).eventIds().get(0).matches(EventIdsTest.UUID_V7));
      assertEquals("mine", rs.get(1).eventIds().get(1));

      rs.get(2).ok();
      rs.get(0).ok();
      rs.get(1).ok();

      PublishResult r1 = get(first);
      assertEquals(rs.get(0).eventIds().get(0), r1.getEventId());
      assertEquals(100, r1.getSequence());
      List<PublishBatchEntry> entries = get(batch);
      assertEquals(2, entries.size());
      assertEquals(rs.get(1).eventIds().get(0), entries.get(0).getResult().getEventId());
      assertEquals(201, entries.get(1).getResult().getSequence());
      PublishResult r3 = get(third);
      assertEquals(rs.get(2).eventIds().get(0), r3.getEventId());
      assertEquals(300, r3.getSequence());
      assertEquals(0, stream.outstanding());
    }
    assertEquals(1, streams.get());
    assertNull(received.poll());
  }

  @Test
  void resourceExhaustedIsRetriedAfterItsRetryDelayWithTheSameEventIds() throws Exception {
    RetryPolicy policy =
        RetryPolicy.builder()
            .initialBackoff(Duration.ofMillis(10))
            .maxBackoff(Duration.ofMillis(10))
            .build();
    try (FerryClient ferry = client(policy);
        StreamPublisher stream = ferry.streamPublisher()) {
      CompletableFuture<PublishResult> f = stream.publish(event());
      Received first = next();
      long refusedAt = System.nanoTime();
      first.refuse(
          refusal(Code.RESOURCE_EXHAUSTED, "LOG_FULL").toBuilder()
              .setRetryDelay(FerryClient.protoDuration(Duration.ofMillis(300)))
              .build());

      Received again = next();
      long waitedMs = (System.nanoTime() - refusedAt) / 1_000_000;
      assertTrue(waitedMs >= 300, "retried after " + waitedMs + " ms");
      assertEquals(first.stream(), again.stream()); // the stream stays open
      assertEquals(first.eventIds(), again.eventIds());
      assertEquals(first.id(), again.id());
      assertFalse(f.isDone());

      again.ok();
      assertEquals(first.eventIds().get(0), get(f).getEventId());
    }
    assertNull(received.poll());
  }

  @Test
  void unansweredRequestsAreSentAgainInOrderOnANewStreamAfterShuttingDown() throws Exception {
    try (FerryClient ferry = client();
        StreamPublisher stream = ferry.streamPublisher()) {
      List<CompletableFuture<PublishResult>> fs = new ArrayList<>();
      for (int i = 0; i < 5; i++) {
        fs.add(stream.publish(event()));
      }
      List<Received> firstStream = next(5);
      firstStream.get(0).ok();
      firstStream.get(1).ok();
      // Ferry draining: what it read is answered, then the stream ends.
      firstStream
          .get(0)
          .stream()
          .end(error(Code.UNAVAILABLE, "SHUTTING_DOWN", retryAfter(Duration.ofMillis(50))));

      List<Received> secondStream = next(3);
      assertTrue(secondStream.stream().allMatch(r -> r.stream().number == 2));
      assertEquals(List.of(3L, 4L, 5L), secondStream.stream().map(Received::id).toList());
      for (int i = 0; i < 3; i++) {
        assertEquals(firstStream.get(i + 2).eventIds(), secondStream.get(i).eventIds());
        secondStream.get(i).ok();
      }
      for (int i = 0; i < 5; i++) {
        assertEquals(firstStream.get(i).eventIds().get(0), get(fs.get(i)).getEventId());
      }
    }
    // close() half-closed the second stream, and nothing was sent a third time.
    assertEquals(2, streams.get());
    synchronized (halfClosed) {
      assertEquals(1, halfClosed.size());
      assertEquals(2, halfClosed.get(0).number);
    }
    assertNull(received.poll());
  }

  @Test
  void aNonRetryableRefusalFailsOnlyItsOwnFuture() throws Exception {
    try (FerryClient ferry = client();
        StreamPublisher stream = ferry.streamPublisher()) {
      CompletableFuture<PublishResult> ok1 = stream.publish(event());
      CompletableFuture<PublishResult> invalid = stream.publish(event());
      CompletableFuture<List<PublishBatchEntry>> kafkaTimeout =
          stream.publishBatch(List.of(event(), event()));
      CompletableFuture<PublishResult> conflict = stream.publish(event());
      CompletableFuture<PublishResult> ok2 = stream.publish(event());
      List<Received> rs = next(5);

      rs.get(1)
          .refuse(
              refusal(Code.INVALID_ARGUMENT, "FIELD_INVALID").toBuilder()
                  .setField("events[0].topic")
                  .build());
      List<String> assigned = rs.get(2).eventIds();
      rs.get(2)
          .refuse(
              refusal(Code.DEADLINE_EXCEEDED, "KAFKA_ACK_TIMEOUT"),
              assigned.toArray(new String[0]));
      rs.get(3)
          .stream()
          .send(
              PublishStreamAnswer.newBuilder()
                  .setRequestId(rs.get(3).id())
                  .addEntries(
                      PublishBatchEntry.newBuilder()
                          .setError(refusal(Code.ALREADY_EXISTS, "EVENT_ID_CONFLICT")))
                  .build());
      rs.get(4).ok();
      rs.get(0).ok();

      FerryException e = failure(invalid);
      assertEquals(Code.INVALID_ARGUMENT, e.code());
      assertEquals("FIELD_INVALID", e.reason());
      assertEquals("events[0].topic", e.field());
      e = failure(kafkaTimeout);
      assertEquals(Code.DEADLINE_EXCEEDED, e.code());
      assertEquals("KAFKA_ACK_TIMEOUT", e.reason());
      assertEquals(assigned, e.assignedEventIds());
      e = failure(conflict);
      assertEquals(Code.ALREADY_EXISTS, e.code());
      assertEquals("EVENT_ID_CONFLICT", e.reason());
      assertEquals(rs.get(0).eventIds().get(0), get(ok1).getEventId());
      assertEquals(rs.get(4).eventIds().get(0), get(ok2).getEventId());
    }
    assertEquals(1, streams.get());
    assertNull(received.poll()); // none of them was sent again
  }

  @Test
  void publishBlocksWhileTheWindowIsFull() throws Exception {
    try (FerryClient ferry = client();
        StreamPublisher stream = ferry.streamPublisher(3)) {
      List<CompletableFuture<PublishResult>> fs = new ArrayList<>();
      for (int i = 0; i < 3; i++) {
        fs.add(stream.publish(event()));
      }
      List<Received> rs = next(3);
      AtomicReference<CompletableFuture<PublishResult>> fourth = new AtomicReference<>();
      CountDownLatch published = new CountDownLatch(1);
      Thread publisher =
          new Thread(
              () -> {
                fourth.set(stream.publish(event()));
                published.countDown();
              });
      publisher.start();

      // The fourth waits for room: nothing more is sent while three are unanswered. (A busy
      // machine can only make this pass more easily, never fail it.)
      assertFalse(published.await(300, TimeUnit.MILLISECONDS));
      assertNull(received.poll());
      assertEquals(3, stream.outstanding());

      rs.get(1).ok(); // one answer makes room for one request
      Received r4 = next();
      assertEquals(4, r4.id());
      assertTrue(published.await(WAIT_S, TimeUnit.SECONDS));
      publisher.join();
      assertEquals(3, stream.outstanding());

      rs.get(0).ok();
      rs.get(2).ok();
      r4.ok();
      for (CompletableFuture<PublishResult> f : fs) {
        get(f);
      }
      get(fourth.get());
    }
  }

  @Test
  void aStreamEndingWithANonRetryableCodeFailsItsUnansweredRequests() throws Exception {
    try (FerryClient ferry = client();
        StreamPublisher stream = ferry.streamPublisher()) {
      CompletableFuture<PublishResult> answered = stream.publish(event());
      CompletableFuture<PublishResult> unanswered = stream.publish(event());
      List<Received> rs = next(2);
      rs.get(0).ok();
      rs.get(0).stream().end(error(Code.INTERNAL, "INTERNAL"));

      get(answered);
      FerryException e = failure(unanswered);
      assertEquals(Code.INTERNAL, e.code());

      // The publisher goes on: the next publish opens another stream.
      CompletableFuture<PublishResult> later = stream.publish(event());
      Received r = next();
      assertEquals(2, r.stream().number);
      r.ok();
      get(later);
    }
    assertNull(received.poll());
  }

  @Test
  void aRequestWithoutAnAnswerFailsAtTheOverallDeadlineWithItsEventIds() throws Exception {
    RetryPolicy policy = RetryPolicy.builder().overallDeadline(Duration.ofMillis(300)).build();
    try (FerryClient ferry = client(policy);
        StreamPublisher stream = ferry.streamPublisher(1)) {
      CompletableFuture<PublishResult> f = stream.publish(event());
      Received r = next(); // and never answered
      FerryException e = failure(f);
      assertEquals(Code.DEADLINE_EXCEEDED, e.code());
      assertEquals(r.eventIds(), e.assignedEventIds());
      assertEquals(0, stream.outstanding());

      // Its room in the window is free again: this publish does not block.
      CompletableFuture<PublishResult> g = stream.publish(event());
      Received r2 = next();
      r2.ok();
      get(g);
    }
  }

  @Test
  void closeWaitsForEveryFutureThenHalfClosesAndRefusesNewEvents() throws Exception {
    try (FerryClient ferry = client()) {
      StreamPublisher stream = ferry.streamPublisher();
      CompletableFuture<PublishResult> f1 = stream.publish(event());
      CompletableFuture<PublishResult> f2 = stream.publish(event());
      List<Received> rs = next(2);
      Thread closer = new Thread(stream::close);
      closer.start();
      rs.get(0).ok();
      rs.get(1).ok();
      closer.join(TimeUnit.SECONDS.toMillis(WAIT_S));
      assertFalse(closer.isAlive());
      assertTrue(f1.isDone() && f2.isDone());
      get(f1);
      get(f2);
      synchronized (halfClosed) {
        assertEquals(1, halfClosed.size());
      }
      assertThrows(IllegalStateException.class, () -> stream.publish(event()));
    }
  }
}
