import dev.ferry.client.FerryClient;
import dev.ferry.client.FerryException;
import dev.ferry.client.Subscriber;
import dev.ferry.client.SubscriberOptions;
import dev.ferry.v1.StartPosition;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Subscribes SUBSCRIPTION to TOPIC from the earliest offset and acks every delivery; once EXPECT
 * distinct event ids were handled, prints {"received": EXPECT} and exits 0, or exits 1 after
 * TIMEOUT_S seconds without that.
 */
public final class RunSubscriber {
  public static void main(String[] args) throws InterruptedException {
    String topic = RunPublisher.require("TOPIC");
    String subscription = RunPublisher.require("SUBSCRIPTION");
    int expect = Integer.parseInt(RunPublisher.require("EXPECT"));
    double timeoutS = Double.parseDouble(RunPublisher.require("TIMEOUT_S"));
    long deadline = System.nanoTime() + (long) (timeoutS * 1e9);

    Set<String> seen = ConcurrentHashMap.newKeySet();
    CountDownLatch done = new CountDownLatch(1);
    SubscriberOptions options =
        SubscriberOptions.builder(subscription, List.of(topic))
            .startPosition(StartPosition.START_POSITION_EARLIEST)
            .build();
    boolean ok = false;
    try (FerryClient ferry = FerryClient.fromEnv();
        Subscriber subscriber =
            ferry.subscriber(
                options,
                delivery -> {
                  seen.add(delivery.getEvent().getEventId());
                  if (seen.size() >= expect) {
                    done.countDown();
                  }
                })) {
      subscriber.start();
      while (!ok && System.nanoTime() < deadline) {
        long left = Math.min(TimeUnit.MILLISECONDS.toNanos(200), deadline - System.nanoTime());
        ok = done.await(left, TimeUnit.NANOSECONDS);
        if (!ok && subscriber.awaitTerminated(Duration.ZERO)) {
          break; // stopped for good
        }
      }
      subscriber.stop(); // the last acks are sent before the stream closes
    } catch (FerryException e) {
      System.err.println("subscribe failed: " + e.getMessage());
      System.exit(1);
    }
    if (!ok) {
      System.err.println("received " + seen.size() + " of " + expect + " in " + timeoutS + " s");
      System.exit(1);
    }
    System.out.println("{\"received\": " + expect + "}");
    System.exit(0);
  }
}
