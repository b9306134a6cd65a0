package dev.ferry.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Status.Code;
import java.time.Duration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

class RetryPolicyTest {
  @ParameterizedTest
  @EnumSource(Code.class)
  void whichCodesRetry(Code code) {
    boolean expected =
        code == Code.UNAVAILABLE
            || code == Code.DEADLINE_EXCEEDED
            || code == Code.RESOURCE_EXHAUSTED
            || code == Code.CANCELLED;
    assertEquals(expected, RetryPolicy.isRetryable(code, true, false), code.name());
  }

  @Test
  void resourceExhaustedWithoutErrorInfoIsTheTransportsSizeLimit() {
    assertTrue(RetryPolicy.isRetryable(Code.RESOURCE_EXHAUSTED, true, false));
    assertEquals(false, RetryPolicy.isRetryable(Code.RESOURCE_EXHAUSTED, false, false));
  }

  @Test
  void cancelledRetriesUnlessTheCallerCancelled() {
    assertTrue(RetryPolicy.isRetryable(Code.CANCELLED, false, false));
    assertEquals(false, RetryPolicy.isRetryable(Code.CANCELLED, false, true));
  }

  @ParameterizedTest
  @EnumSource(Code.class)
  void nothingRetriesOnceTheCallerCancelled(Code code) {
    assertEquals(false, RetryPolicy.isRetryable(code, true, true), code.name());
  }

  @Test
  void backoffDoublesWithJitterUpToTheCap() {
    RetryPolicy p = RetryPolicy.DEFAULT;
    for (int i = 0; i < 200; i++) {
      long first = p.backoff(0).toMillis();
      assertTrue(first >= 50 && first <= 100, "first " + first);
      long third = p.backoff(2).toMillis();
      assertTrue(third >= 200 && third <= 400, "third " + third);
      Duration late = p.backoff(40);
      assertTrue(late.compareTo(Duration.ofMillis(2500)) >= 0, "late " + late);
      assertTrue(late.compareTo(Duration.ofSeconds(5)) <= 0, "late " + late);
    }
  }
}
