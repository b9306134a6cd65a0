package dev.ferry.client;

import com.google.gson.Gson;
import com.google.protobuf.ByteString;
import dev.ferry.v1.AckLevel;
import dev.ferry.v1.Event;
import dev.ferry.v1.Header;
import dev.ferry.v1.PublishBatchEntry;
import dev.ferry.v1.PublishBatchRequest;
import dev.ferry.v1.PublishRequest;
import dev.ferry.v1.PublishResult;
import dev.ferry.v1.PublisherGrpc;
import dev.ferry.v1.SubscriberGrpc;
import io.grpc.Context;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.StatusRuntimeException;
import java.io.IOException;
import java.io.Reader;
import java.lang.System.Logger.Level;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

/**
 * A connection to Ferry: publishes with retries and opens subscribers.
 *
 * <pre>{@code
 * try (FerryClient ferry = FerryClient.fromEnv()) {
 *   PublishResult r = ferry.publish("orders", payload, key, List.of());
 * }
 * }</pre>
 *
 * <p>Every publish carries an event id (a UUIDv7 unless the caller set one), assigned once and
 * sent unchanged on every retry, so a retried publish never creates a second event.
 */
public final class FerryClient implements AutoCloseable {
  /** Where Ferry listens when {@code FERRY_ADDR} is not set. */
  public static final String DEFAULT_ADDR = "127.0.0.1:50051";

  private static final System.Logger LOG = System.getLogger(FerryClient.class.getName());

  private final ManagedChannel channel;
  private final boolean ownsChannel;
  private final PublisherGrpc.PublisherBlockingStub publisher;
  private final PublisherGrpc.PublisherStub asyncPublisher;
  private final RetryPolicy retry;
  private final AckLevel ackLevel;
  private final com.google.protobuf.Duration kafkaWait;

  private FerryClient(Builder b, ManagedChannel channel, boolean ownsChannel) {
    this.channel = channel;
    this.ownsChannel = ownsChannel;
    this.publisher = PublisherGrpc.newBlockingStub(channel);
    this.asyncPublisher = PublisherGrpc.newStub(channel);
    this.retry = b.retry;
    this.ackLevel = b.ackLevel;
    this.kafkaWait = b.kafkaWait == null ? null : protoDuration(b.kafkaWait);
  }

  /**
   * A client for {@code FERRY_ADDR} (default {@value #DEFAULT_ADDR}), with TLS and a token when
   * {@code FERRY_TLS_*} and {@code FERRY_TOKEN_FILE} say so ({@link Credentials#fromEnv()}).
   */
  public static FerryClient fromEnv() {
    return builder().credentials(Credentials.fromEnv()).build();
  }

  public static Builder builder() {
    return new Builder();
  }

  /** Publishes one event; {@code key}, {@code payload} may be null (a null key or value). */
  public PublishResult publish(String topic, byte[] payload, byte[] key, List<Header> headers) {
    Event.Builder e = Event.newBuilder().setTopic(topic).addAllHeaders(headers);
    if (key != null) {
      e.setKey(ByteString.copyFrom(key));
    }
    if (payload != null) {
      e.setPayload(ByteString.copyFrom(payload));
    }
    return publish(e.build());
  }

  /** Publishes one event with the client's ack level. */
  public PublishResult publish(Event event) {
    PublishRequest.Builder req = PublishRequest.newBuilder().setEvent(event).setAckLevel(ackLevel);
    if (kafkaWait != null) {
      req.setKafkaWait(kafkaWait);
    }
    return publish(req.build());
  }

  /**
   * Publishes the request as given, after assigning the event id if it has none; retries per the
   * {@link RetryPolicy}.
   *
   * @throws FerryException when the error is not retryable or the overall deadline has passed
   */
  public PublishResult publish(PublishRequest request) {
    PublishRequest withId =
        request.toBuilder().setEvent(withEventId(request.getEvent())).build();
    return withRetries(
            "Publish", stub -> stub.publish(withId), withId.getEvent().getEventId())
        .getResult();
  }

  /** Publishes events in one write, in order; one entry per event, in request order. */
  public List<PublishBatchEntry> publishBatch(List<Event> events) {
    PublishBatchRequest.Builder req =
        PublishBatchRequest.newBuilder().addAllEvents(events).setAckLevel(ackLevel);
    if (kafkaWait != null) {
      req.setKafkaWait(kafkaWait);
    }
    return publishBatch(req.build());
  }

  /** Publishes the batch as given, after assigning missing event ids; retries as publish does. */
  public List<PublishBatchEntry> publishBatch(PublishBatchRequest request) {
    PublishBatchRequest.Builder b = request.toBuilder();
    for (int i = 0; i < b.getEventsCount(); i++) {
      b.setEvents(i, withEventId(b.getEvents(i)));
    }
    PublishBatchRequest withIds = b.build();
    String first = withIds.getEventsCount() == 0 ? "" : withIds.getEvents(0).getEventId();
    return withRetries("PublishBatch", stub -> stub.publishBatch(withIds), first)
        .getEntriesList();
  }

  /**
   * A publisher over one {@code PublishStream} on this client's channel, with the client's ack
   * level, Kafka wait and retry policy, and at most {@value
   * StreamPublisher#DEFAULT_MAX_OUTSTANDING_REQUESTS} unanswered requests. Close it before the
   * client.
   */
  public StreamPublisher streamPublisher() {
    return streamPublisher(StreamPublisher.DEFAULT_MAX_OUTSTANDING_REQUESTS);
  }

  /** As {@link #streamPublisher()}, with at most {@code maxOutstandingRequests} unanswered. */
  public StreamPublisher streamPublisher(int maxOutstandingRequests) {
    return new StreamPublisher(asyncPublisher, retry, ackLevel, kafkaWait, maxOutstandingRequests);
  }

  /** A subscriber on this client's channel; call {@link Subscriber#start()} to run it. */
  public Subscriber subscriber(SubscriberOptions options, DeliveryHandler handler) {
    return new Subscriber(SubscriberGrpc.newStub(channel), options, handler, retry);
  }

  /** The channel, for calls this client does not wrap (the unary Ack, Nack, ExtendLease). */
  public ManagedChannel channel() {
    return channel;
  }

  /** The event with an id: the caller's, or a new UUIDv7 (assigned once, before any send). */
  static Event withEventId(Event event) {
    return event.getEventId().isEmpty()
        ? event.toBuilder().setEventId(EventIds.newUuidV7()).build()
        : event;
  }

  private <T> T withRetries(
      String method, Function<PublisherGrpc.PublisherBlockingStub, T> call, String eventId) {
    long deadline = System.nanoTime() + retry.overallDeadline().toNanos();
    for (int retries = 0; ; retries++) {
      long remaining = deadline - System.nanoTime();
      long attempt = Math.min(retry.attemptTimeout().toNanos(), Math.max(remaining, 1));
      try {
        return call.apply(publisher.withDeadlineAfter(attempt, TimeUnit.NANOSECONDS));
      } catch (StatusRuntimeException e) {
        boolean callerCancelled =
            Thread.currentThread().isInterrupted() || Context.current().isCancelled();
        FerryException error = FerryException.from(e);
        if (!RetryPolicy.isRetryable(
            error.code(), error.errorInfo().isPresent(), callerCancelled)) {
          throw error;
        }
        Duration wait = retry.backoff(retries);
        if (error.retryDelay().isPresent() && error.retryDelay().get().compareTo(wait) > 0) {
          wait = error.retryDelay().get();
        }
        if (wait.toNanos() >= deadline - System.nanoTime()) {
          throw error;
        }
        LOG.log(
            Level.INFO,
            "{0} of event {1} failed: {2}; retry {3} in {4,number,#} ms",
            method,
            eventId,
            error.getMessage(),
            retries + 1,
            wait.toMillis());
        try {
          Thread.sleep(wait.toMillis(), wait.toNanosPart() % 1_000_000);
        } catch (InterruptedException ie) {
          Thread.currentThread().interrupt();
          throw FerryException.cancelled("interrupted while waiting to retry " + method, ie);
        }
      }
    }
  }

  /**
   * Reads a gRPC service config (such as the repo's {@code grpc_service_config.json}) into the
   * map that {@link ManagedChannelBuilder#defaultServiceConfig} takes.
   */
  @SuppressWarnings("unchecked")
  public static Map<String, ?> loadServiceConfig(Path json) throws IOException {
    try (Reader r = Files.newBufferedReader(json)) {
      // Gson reads numbers as Double, the type gRPC's service config parser expects.
      return new Gson().fromJson(r, Map.class);
    }
  }

  static com.google.protobuf.Duration protoDuration(Duration d) {
    return com.google.protobuf.Duration.newBuilder()
        .setSeconds(d.getSeconds())
        .setNanos(d.getNano())
        .build();
  }

  /** Shuts the channel down (when the client built it), waiting up to 5 s for calls to end. */
  @Override
  public void close() {
    if (!ownsChannel) {
      return;
    }
    channel.shutdown();
    try {
      if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
        channel.shutdownNow();
      }
    } catch (InterruptedException e) {
      channel.shutdownNow();
      Thread.currentThread().interrupt();
    }
  }

  /** Builds a {@link FerryClient}. */
  public static final class Builder {
    private String target;
    private ManagedChannel channel;
    private RetryPolicy retry = RetryPolicy.DEFAULT;
    private AckLevel ackLevel = AckLevel.ACK_LEVEL_DURABLE;
    private Duration kafkaWait;
    private Map<String, ?> serviceConfig;
    private int maxInboundMessageBytes = 64 << 20;
    private Credentials credentials = Credentials.NONE;

    private Builder() {}

    /** TLS and a bearer token; default plaintext without a token. */
    public Builder credentials(Credentials credentials) {
      this.credentials = Objects.requireNonNull(credentials);
      return this;
    }

    /** Ferry's address, {@code host:port}; default {@code FERRY_ADDR}, else 127.0.0.1:50051. */
    public Builder target(String target) {
      this.target = Objects.requireNonNull(target);
      return this;
    }

    /** Uses this channel instead of building one; {@link #close()} leaves it open. */
    public Builder channel(ManagedChannel channel) {
      this.channel = Objects.requireNonNull(channel);
      return this;
    }

    public Builder retryPolicy(RetryPolicy retry) {
      this.retry = Objects.requireNonNull(retry);
      return this;
    }

    /** When Ferry answers a publish: DURABLE (default, logged) or KAFKA (stored in Kafka). */
    public Builder ackLevel(AckLevel ackLevel) {
      this.ackLevel = Objects.requireNonNull(ackLevel);
      return this;
    }

    /** With ACK_LEVEL_KAFKA: how long Ferry waits for Kafka; default the server's setting. */
    public Builder kafkaWait(Duration kafkaWait) {
      this.kafkaWait = kafkaWait;
      return this;
    }

    /**
     * The channel's default service config (see {@link #loadServiceConfig}); off by default, as
     * the client retries by itself and gRPC's own retries do not read RetryInfo.
     */
    public Builder serviceConfig(Map<String, ?> serviceConfig) {
      this.serviceConfig = serviceConfig;
      return this;
    }

    /** The largest message the client accepts (a Deliveries with one large record); 64 MiB. */
    public Builder maxInboundMessageBytes(int bytes) {
      this.maxInboundMessageBytes = bytes;
      return this;
    }

    /**
     * The client.
     *
     * @throws IllegalArgumentException for credentials that cannot work (a token in the clear to
     *     a remote address, a client certificate without its key)
     * @throws java.io.UncheckedIOException when a TLS file cannot be read
     */
    public FerryClient build() {
      if (channel != null) {
        return new FerryClient(this, channel, false);
      }
      String addr = target;
      if (addr == null) {
        String env = System.getenv("FERRY_ADDR");
        addr = env == null || env.isBlank() ? DEFAULT_ADDR : env.trim();
      }
      ManagedChannelBuilder<?> cb =
          Grpc.newChannelBuilder(addr, credentials.channelCredentials(addr))
              .maxInboundMessageSize(maxInboundMessageBytes);
      Credentials.Tls tls = credentials.tls();
      if (tls != null && tls.serverName() != null) {
        cb.overrideAuthority(tls.serverName());
      }
      if (serviceConfig != null) {
        cb.defaultServiceConfig(serviceConfig).enableRetry();
      }
      return new FerryClient(this, cb.build(), true);
    }
  }
}
