package dev.ferry.client;

import io.grpc.Status;
import java.time.Duration;
import java.util.Objects;
import java.util.concurrent.ThreadLocalRandom;

/**
 * When and how long the client retries: capped exponential backoff with jitter within an overall
 * deadline, each attempt with its own deadline. The subscriber reconnects with the same backoff.
 */
public final class RetryPolicy {
  /** 100 ms doubling to 5 s, attempts of at most 20 s, 60 s in all. */
  public static final RetryPolicy DEFAULT = builder().build();

  private final Duration initialBackoff;
  private final Duration maxBackoff;
  private final double multiplier;
  private final Duration attemptTimeout;
  private final Duration overallDeadline;

  private RetryPolicy(Builder b) {
    this.initialBackoff = b.initialBackoff;
    this.maxBackoff = b.maxBackoff;
    this.multiplier = b.multiplier;
    this.attemptTimeout = b.attemptTimeout;
    this.overallDeadline = b.overallDeadline;
  }

  public static Builder builder() {
    return new Builder();
  }

  /**
   * Whether a failed publish may be sent again (with the same event ids).
   *
   * @param hasErrorInfo whether the status carried a google.rpc.ErrorInfo: a RESOURCE_EXHAUSTED
   *     without one is gRPC refusing a request over the server's size limit, which never fits
   * @param callerCancelled whether the caller itself cancelled (an interrupt, or a cancelled or
   *     expired gRPC Context): then nothing is retried
   */
  public static boolean isRetryable(
      Status.Code code, boolean hasErrorInfo, boolean callerCancelled) {
    if (callerCancelled) {
      return false;
    }
    switch (code) {
      case UNAVAILABLE:
      case CANCELLED: // by the server or on the way; the caller's own is handled above
      case DEADLINE_EXCEEDED: // of one attempt; the overall deadline bounds the loop
        return true;
      case RESOURCE_EXHAUSTED:
        return hasErrorInfo;
      default:
        return false;
    }
  }

  /** The wait before retry number {@code retries} (0 for the first retry), jittered. */
  public Duration backoff(int retries) {
    double capped =
        Math.min(
            maxBackoff.toNanos(),
            initialBackoff.toNanos() * Math.pow(multiplier, Math.min(retries, 64)));
    // Equal jitter: half fixed, half random, so that clients restarted together spread out.
    long half = (long) (capped / 2);
    return Duration.ofNanos(half + ThreadLocalRandom.current().nextLong(half + 1));
  }

  public Duration initialBackoff() {
    return initialBackoff;
  }

  public Duration maxBackoff() {
    return maxBackoff;
  }

  public Duration attemptTimeout() {
    return attemptTimeout;
  }

  public Duration overallDeadline() {
    return overallDeadline;
  }

  /** Builds a {@link RetryPolicy}; every setting has the default above. */
  public static final class Builder {
    private Duration initialBackoff = Duration.ofMillis(100);
    private Duration maxBackoff = Duration.ofSeconds(5);
    private double multiplier = 2.0;
    private Duration attemptTimeout = Duration.ofSeconds(20);
    private Duration overallDeadline = Duration.ofSeconds(60);

    private Builder() {}

    public Builder initialBackoff(Duration d) {
      this.initialBackoff = positive(d, "initialBackoff");
      return this;
    }

    public Builder maxBackoff(Duration d) {
      this.maxBackoff = positive(d, "maxBackoff");
      return this;
    }

    public Builder multiplier(double m) {
      if (!(m >= 1.0)) {
        throw new IllegalArgumentException("multiplier must be >= 1");
      }
      this.multiplier = m;
      return this;
    }

    /** The deadline of one attempt; a DEADLINE_EXCEEDED attempt is retried. */
    public Builder attemptTimeout(Duration d) {
      this.attemptTimeout = positive(d, "attemptTimeout");
      return this;
    }

    /** How long a publish may take in all, retries included. */
    public Builder overallDeadline(Duration d) {
      this.overallDeadline = positive(d, "overallDeadline");
      return this;
    }

    public RetryPolicy build() {
      if (maxBackoff.compareTo(initialBackoff) < 0) {
        throw new IllegalArgumentException("maxBackoff must be >= initialBackoff");
      }
      return new RetryPolicy(this);
    }

    private static Duration positive(Duration d, String name) {
      Objects.requireNonNull(d, name);
      if (d.isNegative() || d.isZero()) {
        throw new IllegalArgumentException(name + " must be positive");
      }
      return d;
    }
  }
}
