package dev.ferry.client;

import static dev.ferry.client.Fakes.error;
import static dev.ferry.client.Fakes.retryAfter;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.rpc.BadRequest;
import dev.ferry.v1.AssignedEventIds;
import dev.ferry.v1.Event;
import dev.ferry.v1.PublishBatchEntry;
import dev.ferry.v1.PublishBatchRequest;
import dev.ferry.v1.PublishBatchResponse;
import dev.ferry.v1.PublishRequest;
import dev.ferry.v1.PublishResponse;
import dev.ferry.v1.PublishResult;
import dev.ferry.v1.PublisherGrpc;
import io.grpc.Context;
import io.grpc.ManagedChannel;
import io.grpc.Status.Code;
import io.grpc.StatusRuntimeException;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.stub.StreamObserver;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.List;
import java.util.Map;
import java.util.Queue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** The publish retry loop against an in-process fake Publisher that follows a script. */
class PublishRetryTest {
  /** One scripted answer: an error to throw, a delay before answering OK, or OK. */
  private record Step(StatusRuntimeException error, Duration delay) {}

  private static Step fail(StatusRuntimeException e) {
    return new Step(e, Duration.ZERO);
  }

  private static Step ok() {
    return new Step(null, Duration.ZERO);
  }

  private final Queue<Step> script = new ArrayDeque<>();
  private final List<Object> requests = new CopyOnWriteArrayList<>();
  private Fakes fakes;

  private final PublisherGrpc.PublisherImplBase fake =
      new PublisherGrpc.PublisherImplBase() {
        @Override
        public void publish(PublishRequest req, StreamObserver<PublishResponse> out) {
          if (answer(req, out)) {
            String id = req.getEvent().getEventId();
            out.onNext(
                PublishResponse.newBuilder()
                    .setResult(PublishResult.newBuilder().setEventId(id).setSequence(7))
                    .build());
            out.onCompleted();
          }
        }

        @Override
        public void publishBatch(PublishBatchRequest req, StreamObserver<PublishBatchResponse> out) {
          if (answer(req, out)) {
            PublishBatchResponse.Builder r = PublishBatchResponse.newBuilder();
            req.getEventsList()
                .forEach(
                    e ->
                        r.addEntries(
                            PublishBatchEntry.newBuilder()
                                .setResult(PublishResult.newBuilder().setEventId(e.getEventId()))));
            out.onNext(r.build());
            out.onCompleted();
          }
        }
      };

  private boolean answer(Object req, StreamObserver<?> out) {
    requests.add(req);
    Step step;
    synchronized (script) {
      step = script.isEmpty() ? ok() : script.remove();
    }
    // Waits like a slow server, and stops waiting once the client gives up on the call.
    long until = System.nanoTime() + step.delay().toNanos();
    while (System.nanoTime() < until && !Context.current().isCancelled()) {
      try {
        Thread.sleep(10);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        break;
      }
    }
    if (step.error() != null) {
      out.onError(step.error());
      return false;
    }
    return true;
  }

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

  private List<String> eventIds() {
    return requests.stream()
        .map(r -> ((PublishRequest) r).getEvent().getEventId())
        .collect(Collectors.toList());
  }

  private static Event event() {
    return Event.newBuilder().setTopic("java-unit").build();
  }

  @Test
  void unavailableIsRetriedAfterRetryInfoWithTheSameEventId() throws Exception {
    script.add(fail(error(Code.UNAVAILABLE, "SHUTTING_DOWN", retryAfter(Duration.ofMillis(300)))));
    try (FerryClient ferry = client()) {
      long start = System.nanoTime();
      PublishResult r = ferry.publish("java-unit", "p".getBytes(), "k".getBytes(), List.of());
      long elapsedMs = (System.nanoTime() - start) / 1_000_000;
      assertTrue(elapsedMs >= 300, "waited " + elapsedMs + " ms");
      List<String> ids = eventIds();
      assertEquals(2, ids.size());
      assertEquals(ids.get(0), ids.get(1));
      assertTrue(ids.get(0).matches(EventIdsTest.UUID_V7), ids.get(0));
      assertEquals(ids.get(0), r.getEventId());
      assertEquals(7, r.getSequence());
    }
  }

  @Test
  void resourceExhaustedWithErrorInfoIsRetried() throws Exception {
    script.add(fail(error(Code.RESOURCE_EXHAUSTED, "LOG_FULL", retryAfter(Duration.ofMillis(50)))));
    try (FerryClient ferry = client()) {
      ferry.publish(event());
      assertEquals(2, requests.size());
    }
  }

  @Test
  void resourceExhaustedWithoutErrorInfoIsPermanent() throws Exception {
    script.add(fail(error(Code.RESOURCE_EXHAUSTED, null)));
    try (FerryClient ferry = client()) {
      FerryException e = assertThrows(FerryException.class, () -> ferry.publish(event()));
      assertEquals(Code.RESOURCE_EXHAUSTED, e.code());
      assertEquals("", e.reason());
      assertEquals(1, requests.size());
    }
  }

  @ParameterizedTest
  @EnumSource(
      value = Code.class,
      names = {"INVALID_ARGUMENT", "ALREADY_EXISTS", "FAILED_PRECONDITION", "NOT_FOUND", "INTERNAL"})
  void permanentErrorsAreNotRetried(Code code) throws Exception {
    BadRequest bad =
        BadRequest.newBuilder()
            .addFieldViolations(
                BadRequest.FieldViolation.newBuilder().setField("event.topic").setDescription("x"))
            .build();
    script.add(fail(error(code, "SOME_REASON", bad)));
    try (FerryClient ferry = client()) {
      FerryException e = assertThrows(FerryException.class, () -> ferry.publish(event()));
      assertEquals(code, e.code());
      assertEquals("SOME_REASON", e.reason());
      assertEquals("event.topic", e.badRequest().orElseThrow().getFieldViolations(0).getField());
      assertEquals(1, requests.size());
    }
  }

  @Test
  void cancelledByTheServerIsRetried() throws Exception {
    script.add(fail(error(Code.CANCELLED, null)));
    try (FerryClient ferry = client()) {
      ferry.publish(event());
      assertEquals(2, requests.size());
    }
  }

  @Test
  void cancelledByTheCallerIsNotRetried() throws Exception {
    try (FerryClient ferry = client()) {
      Context.CancellableContext ctx = Context.current().withCancellation();
      ctx.cancel(null);
      FerryException e =
          assertThrows(FerryException.class, () -> ctx.run(() -> ferry.publish(event())));
      assertEquals(Code.CANCELLED, e.code());
      assertTrue(requests.size() <= 1);
    }
  }

  @Test
  void theCallersContextDeadlineEndsTheRetries() throws Exception {
    script.add(new Step(null, Duration.ofMillis(30_000)));
    try (FerryClient ferry = client()) {
      Context.CancellableContext ctx =
          Context.current()
              .withDeadlineAfter(
                  300, java.util.concurrent.TimeUnit.MILLISECONDS, fakes.scheduler);
      long start = System.nanoTime();
      FerryException e =
          assertThrows(FerryException.class, () -> ctx.run(() -> ferry.publish(event())));
      long elapsedMs = (System.nanoTime() - start) / 1_000_000;
      assertEquals(Code.DEADLINE_EXCEEDED, e.code());
      assertEquals(1, requests.size());
      // The 300 ms deadline ended the call, not the 30 s answer; the bound leaves room for load.
      assertTrue(elapsedMs < 10_000, "took " + elapsedMs + " ms");
      ctx.cancel(null);
    }
  }

  @Test
  void attemptDeadlineIsRetriedWithinTheOverallDeadline() throws Exception {
    script.add(new Step(null, Duration.ofMillis(600)));
    RetryPolicy policy = RetryPolicy.builder().attemptTimeout(Duration.ofMillis(200)).build();
    try (FerryClient ferry = client(policy)) {
      ferry.publish(event());
      List<String> ids = eventIds();
      assertEquals(2, ids.size());
      assertEquals(ids.get(0), ids.get(1));
    }
  }

  @Test
  void deadlineExceededCarriesAssignedIdsAndStopsAtTheOverallDeadline() throws Exception {
    Event e = event().toBuilder().setEventId("caller-id-1").build();
    for (int i = 0; i < 100; i++) {
      AssignedEventIds ids = AssignedEventIds.newBuilder().addEventIds("caller-id-1").build();
      script.add(fail(error(Code.DEADLINE_EXCEEDED, "LOG_COMMIT_TIMEOUT", ids)));
    }
    RetryPolicy policy =
        RetryPolicy.builder()
            .initialBackoff(Duration.ofMillis(20))
            .overallDeadline(Duration.ofMillis(500))
            .build();
    try (FerryClient ferry = client(policy)) {
      long start = System.nanoTime();
      FerryException err = assertThrows(FerryException.class, () -> ferry.publish(e));
      long elapsedMs = (System.nanoTime() - start) / 1_000_000;
      assertEquals(Code.DEADLINE_EXCEEDED, err.code());
      assertEquals("LOG_COMMIT_TIMEOUT", err.reason());
      assertEquals(List.of("caller-id-1"), err.assignedEventIds());
      assertTrue(requests.size() >= 2, "attempts " + requests.size());
      // 100 scripted failures outlast the 500 ms deadline; the bound leaves room for load.
      assertTrue(elapsedMs < 10_000, "took " + elapsedMs + " ms");
      assertTrue(eventIds().stream().allMatch("caller-id-1"::equals));
    }
  }

  @Test
  void batchAssignsMissingIdsOnceAndKeepsTheCallers() throws Exception {
    script.add(fail(error(Code.UNAVAILABLE, "LOG_WRITE_FAILED")));
    List<Event> events =
        List.of(event(), event().toBuilder().setEventId("mine").build(), event());
    try (FerryClient ferry = client()) {
      List<PublishBatchEntry> entries = ferry.publishBatch(events);
      assertEquals(2, requests.size());
      assertEquals(requests.get(0), requests.get(1));
      List<String> ids =
          entries.stream().map(x -> x.getResult().getEventId()).collect(Collectors.toList());
      assertEquals("mine", ids.get(1));
      assertTrue(ids.get(0).matches(EventIdsTest.UUID_V7));
      assertFalse(ids.get(0).equals(ids.get(2)));
    }
  }

  @Test
  void theReposServiceConfigMakesTheChannelRetry() throws Exception {
    Map<String, ?> config =
        FerryClient.loadServiceConfig(Path.of("../../proto/ferry/v1/grpc_service_config.json"));
    script.add(fail(error(Code.UNAVAILABLE, "SHUTTING_DOWN")));
    fakes = new Fakes(fake);
    ManagedChannel channel =
        InProcessChannelBuilder.forName(fakes.name)
            .defaultServiceConfig(config)
            .enableRetry()
            .build();
    try {
      // The bare stub, without the client's loop: the channel itself retried.
      PublisherGrpc.newBlockingStub(channel)
          .publish(PublishRequest.newBuilder().setEvent(event()).build());
      assertEquals(2, requests.size());
    } finally {
      channel.shutdownNow();
    }
    try (FerryClient ferry =
        FerryClient.builder().target("127.0.0.1:1").serviceConfig(config).build()) {
      assertFalse(ferry.channel().isShutdown());
    }
  }
}
