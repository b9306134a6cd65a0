package dev.ferry.client;

import dev.ferry.v1.DeliveryOrder;
import dev.ferry.v1.OpenSubscription;
import dev.ferry.v1.StartPosition;
import java.time.Duration;
import java.util.List;
import java.util.Objects;

/** What a {@link Subscriber} opens and how it runs handlers; build with {@link #builder}. */
public final class SubscriberOptions {
  final OpenSubscription open;
  final int maxConcurrency;
  final Duration nackDelay;
  final Duration stopGrace;

  private SubscriberOptions(Builder b) {
    this.maxConcurrency = b.maxConcurrency;
    this.nackDelay = b.nackDelay;
    this.stopGrace = b.stopGrace;
    int outstanding = b.maxOutstandingEvents > 0 ? b.maxOutstandingEvents : 4 * b.maxConcurrency;
    OpenSubscription.Builder o =
        b.open.clone().setMaxOutstandingEvents(outstanding).setStartPosition(b.startPosition);
    if (b.leaseDuration != null) {
      o.setLeaseDuration(FerryClient.protoDuration(b.leaseDuration));
    }
    this.open = o.build();
  }

  /** Options for {@code subscription} (a Kafka consumer group) on {@code topics}. */
  public static Builder builder(String subscription, List<String> topics) {
    return new Builder(subscription, topics);
  }

  public String subscription() {
    return open.getSubscription();
  }

  /** Builds {@link SubscriberOptions}. */
  public static final class Builder {
    private final OpenSubscription.Builder open = OpenSubscription.newBuilder();
    private int maxConcurrency = 16;
    private int maxOutstandingEvents;
    private Duration leaseDuration;
    private Duration nackDelay;
    private Duration stopGrace = Duration.ofSeconds(30);
    private StartPosition startPosition = StartPosition.START_POSITION_EARLIEST;

    private Builder(String subscription, List<String> topics) {
      open.setSubscription(Objects.requireNonNull(subscription)).addAllTopics(topics);
    }

    /** How many handlers run at once; default 16. */
    public Builder maxConcurrency(int n) {
      if (n < 1) {
        throw new IllegalArgumentException("maxConcurrency must be >= 1");
      }
      this.maxConcurrency = n;
      return this;
    }

    /** How many deliveries Ferry leases to this stream at once; default 4 x maxConcurrency. */
    public Builder maxOutstandingEvents(int n) {
      this.maxOutstandingEvents = n;
      return this;
    }

    /** Lease per delivery (1 s to 10 min); the server's default (30 s) when unset. */
    public Builder leaseDuration(Duration d) {
      this.leaseDuration = d;
      return this;
    }

    /** Wait before a nacked delivery comes again; unset: the subscription's backoff. */
    public Builder nackDelay(Duration d) {
      this.nackDelay = d;
      return this;
    }

    /** How long {@link Subscriber#stop()} waits for running handlers; default 30 s. */
    public Builder stopGrace(Duration d) {
      this.stopGrace = Objects.requireNonNull(d);
      return this;
    }

    /** Where a subscription without committed offsets starts; default earliest. */
    public Builder startPosition(StartPosition p) {
      this.startPosition = Objects.requireNonNull(p);
      return this;
    }

    public Builder deliveryOrder(DeliveryOrder order) {
      open.setDeliveryOrder(order);
      return this;
    }

    /** Dead-letter topic, and after how many attempts (0: only on an explicit dead letter). */
    public Builder deadLetter(String topic, int maxDeliveryAttempts) {
      open.setDeadLetterTopic(topic).setMaxDeliveryAttempts(maxDeliveryAttempts);
      return this;
    }

    /** The subscription's redelivery backoff after an expiry or a nack without delay. */
    public Builder redeliveryBackoff(Duration min, Duration max) {
      open.setMinRedeliveryBackoff(FerryClient.protoDuration(min))
          .setMaxRedeliveryBackoff(FerryClient.protoDuration(max));
      return this;
    }

    public SubscriberOptions build() {
      return new SubscriberOptions(this);
    }
  }
}
