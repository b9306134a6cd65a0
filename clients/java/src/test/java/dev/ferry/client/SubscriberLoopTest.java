package dev.ferry.client;

import static dev.ferry.client.Fakes.error;
import static dev.ferry.client.Fakes.retryAfter;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import dev.ferry.v1.AckIdResult;
import dev.ferry.v1.AckIdStatus;
import dev.ferry.v1.AckResults;
import dev.ferry.v1.Deliveries;
import dev.ferry.v1.Delivery;
import dev.ferry.v1.ReceivedEvent;
import dev.ferry.v1.SubscribeRequest;
import dev.ferry.v1.SubscribeResponse;
import dev.ferry.v1.SubscriberGrpc;
import dev.ferry.v1.SubscriptionOpened;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.MethodDescriptor;
import io.grpc.Status.Code;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BiConsumer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The subscriber loop against an in-process fake Subscriber service. */
class SubscriberLoopTest {
  private final AtomicInteger streams = new AtomicInteger();
  private final List<SubscribeRequest> received = new CopyOnWriteArrayList<>();
  /** What the client did to its calls, in order: "halfClose" and "cancel". */
  private final List<String> clientCallEnds = new CopyOnWriteArrayList<>();
  private final CountDownLatch cancelled = new CountDownLatch(1);
  private Fakes fakes;

  /** A fake whose every stream calls {@code onOpen(streamNumber, responses)} after `open`. */
  private Subscriber subscriber(
      SubscriberOptions options,
      DeliveryHandler handler,
      BiConsumer<Integer, StreamObserver<SubscribeResponse>> onOpen)
      throws Exception {
    fakes =
        new Fakes(
            new SubscriberGrpc.SubscriberImplBase() {
              @Override
              public StreamObserver<SubscribeRequest> subscribe(
                  StreamObserver<SubscribeResponse> out) {
                int n = streams.incrementAndGet();
                // A cancel after the client's half-close reaches the server only here.
                ((ServerCallStreamObserver<SubscribeResponse>) out)
                    .setOnCancelHandler(cancelled::countDown);
                return new StreamObserver<>() {
                  @Override
                  public void onNext(SubscribeRequest r) {
                    received.add(r);
                    if (r.hasOpen()) {
                      onOpen.accept(n, out);
                      return;
                    }
                    List<String> ids =
                        r.hasAck()
                            ? r.getAck().getAckIdsList()
                            : r.hasNack()
                                ? r.getNack().getAckIdsList()
                                : r.getExtend().getAckIdsList();
                    AckResults.Builder results = AckResults.newBuilder();
                    ids.forEach(
                        id ->
                            results.addResults(
                                AckIdResult.newBuilder()
                                    .setAckId(id)
                                    .setStatus(AckIdStatus.ACK_ID_STATUS_APPLIED)));
                    synchronized (out) {
                      out.onNext(SubscribeResponse.newBuilder().setAckResults(results).build());
                    }
                  }

                  @Override
                  public void onError(Throwable t) {}

                  @Override
                  public void onCompleted() {} // like Ferry: the stream stays open
                };
              }
            },
            recordCallEnds());
    FerryClient ferry = FerryClient.builder().channel(fakes.channel).build();
    return ferry.subscriber(options, handler);
  }

  /**
   * Records the client's half-closes and cancels as the client makes them: the in-process server
   * drops a half-close still queued behind an unread message when the cancel follows.
   */
  private ClientInterceptor recordCallEnds() {
    return new ClientInterceptor() {
      @Override
      public <Q, R> ClientCall<Q, R> interceptCall(
          MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
        return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
          @Override
          public void halfClose() {
            clientCallEnds.add("halfClose");
            super.halfClose();
          }

          @Override
          public void cancel(String message, Throwable cause) {
            clientCallEnds.add("cancel");
            super.cancel(message, cause);
          }
        };
      }
    };
  }

  @AfterEach
  void stopServer() {
    if (fakes != null) {
      fakes.close();
    }
  }

  private static Delivery delivery(String id, int attempt) {
    return Delivery.newBuilder()
        .setAckId("ack-" + id)
        .setDeliveryAttempt(attempt)
        .setEvent(
            ReceivedEvent.newBuilder()
                .setEventId(id)
                .setTopic("java-unit")
                .setPayload(ByteString.copyFromUtf8(id)))
        .build();
  }

  private List<String> ids(java.util.function.Predicate<SubscribeRequest> kind,
      java.util.function.Function<SubscribeRequest, List<String>> get) {
    return received.stream().filter(kind).flatMap(r -> get.apply(r).stream()).toList();
  }

  @Test
  void acksNacksExtendsReconnectsAndStopsCleanly() throws Exception {
    CountDownLatch slowDone = new CountDownLatch(1);
    DeliveryHandler handler =
        d -> {
          switch (d.getEvent().getEventId()) {
            case "bad":
              throw new IllegalStateException("handler failure");
            case "slow":
              Thread.sleep(2500); // past the 2 s lease: needs an extension
              slowDone.countDown();
              break;
            default:
              break;
          }
        };
    SubscriberOptions options =
        SubscriberOptions.builder("java-unit-sub", List.of("java-unit"))
            .leaseDuration(Duration.ofSeconds(2))
            .nackDelay(Duration.ofSeconds(1))
            .build();
    Subscriber sub =
        subscriber(
            options,
            handler,
            (n, out) -> {
              if (n == 1) { // Ferry shutting down: reconnect
                out.onError(
                    error(Code.UNAVAILABLE, "SHUTTING_DOWN", retryAfter(Duration.ofMillis(100))));
                return;
              }
              synchronized (out) {
                out.onNext(
                    SubscribeResponse.newBuilder()
                        .setOpened(
                            SubscriptionOpened.newBuilder()
                                .setSubscription("java-unit-sub")
                                .setLeaseDuration(FerryClient.protoDuration(Duration.ofSeconds(2))))
                        .build());
                out.onNext(
                    SubscribeResponse.newBuilder()
                        .setDeliveries(
                            Deliveries.newBuilder()
                                .addDeliveries(delivery("good", 1))
                                .addDeliveries(delivery("bad", 1))
                                .addDeliveries(delivery("slow", 1)))
                        .build());
              }
            });
    sub.start();
    assertTrue(slowDone.await(10, TimeUnit.SECONDS));
    sub.stop();
    assertTrue(cancelled.await(5, TimeUnit.SECONDS), "stream ended after stop");

    assertEquals(2, streams.get());
    SubscribeRequest open = received.get(0);
    assertEquals("java-unit-sub", open.getOpen().getSubscription());
    assertEquals(64, open.getOpen().getMaxOutstandingEvents());
    assertEquals(List.of("ack-good", "ack-slow"),
        ids(SubscribeRequest::hasAck, r -> r.getAck().getAckIdsList()));
    assertEquals(List.of("ack-bad"),
        ids(SubscribeRequest::hasNack, r -> r.getNack().getAckIdsList()));
    SubscribeRequest nack = received.stream().filter(SubscribeRequest::hasNack).findFirst().get();
    assertEquals(1, nack.getNack().getRedeliveryDelay().getSeconds());
    assertTrue(ids(SubscribeRequest::hasExtend, r -> r.getExtend().getAckIdsList())
        .contains("ack-slow"));
    // stop() half-closes the open stream, then cancels it; the first stream ended on its error.
    int n = clientCallEnds.size();
    assertTrue(n >= 2, clientCallEnds.toString());
    assertEquals(List.of("halfClose", "cancel"), clientCallEnds.subList(n - 2, n));
    assertEquals(1, clientCallEnds.stream().filter("halfClose"::equals).count());
    sub.awaitTerminated(); // stopped on request: no error
  }

  @Test
  void failedPreconditionEndsTheSubscriberWithItsReason() throws Exception {
    Subscriber sub =
        subscriber(
            SubscriberOptions.builder("java-unit-sub", List.of("java-unit")).build(),
            d -> {},
            (n, out) ->
                out.onError(error(Code.FAILED_PRECONDITION, "SUBSCRIPTION_SETTINGS_CONFLICT")));
    sub.start();
    FerryException e =
        assertThrows(FerryException.class, () -> sub.awaitTerminated(Duration.ofSeconds(5)));
    assertEquals(Code.FAILED_PRECONDITION, e.code());
    assertEquals("SUBSCRIPTION_SETTINGS_CONFLICT", e.reason());
    assertEquals(1, streams.get());
    sub.close(); // after a failure, close returns at once
  }
}
