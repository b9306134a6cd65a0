import com.google.protobuf.ByteString;
import dev.ferry.client.FerryClient;
import dev.ferry.client.FerryException;
import dev.ferry.client.StreamPublisher;
import dev.ferry.v1.Event;
import java.util.concurrent.CompletionException;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Publishes COUNT events to TOPIC (ids ID_PREFIX-i, keys k{i % 8}, payloads payload-i), then
 * prints {"published": COUNT}. PUBLISH_MODE=unary (default) publishes one call at a time;
 * PUBLISH_MODE=stream pipelines them over one PublishStream and waits for every answer. Exits 1
 * on an error the client does not retry.
 */
public final class RunPublisher {
  public static void main(String[] args) {
    String topic = require("TOPIC");
    int count = Integer.parseInt(require("COUNT"));
    String prefix = require("ID_PREFIX");
    String mode = System.getenv().getOrDefault("PUBLISH_MODE", "");
    try (FerryClient ferry = FerryClient.fromEnv()) {
      switch (mode.isEmpty() ? "unary" : mode) {
        case "unary":
          for (int i = 0; i < count; i++) {
            ferry.publish(event(topic, prefix, i));
          }
          break;
        case "stream":
          publishOverStream(ferry, topic, prefix, count);
          break;
        default:
          System.err.println("PUBLISH_MODE must be unary or stream, not " + mode);
          System.exit(2);
      }
    } catch (FerryException e) {
      System.err.println("publish failed: " + e.getMessage());
      System.exit(1);
    }
    System.out.println("{\"published\": " + count + "}");
    System.exit(0);
  }

  /** Publishes without waiting in between; close() waits for every answer. */
  private static void publishOverStream(FerryClient ferry, String topic, String prefix, int count) {
    AtomicReference<Throwable> firstError = new AtomicReference<>();
    try (StreamPublisher stream = ferry.streamPublisher()) {
      for (int i = 0; i < count && firstError.get() == null; i++) {
        stream
            .publish(event(topic, prefix, i))
            .whenComplete(
                (result, error) -> {
                  if (error != null) {
                    firstError.compareAndSet(null, error);
                  }
                });
      }
    }
    Throwable e = firstError.get();
    if (e instanceof CompletionException && e.getCause() != null) {
      e = e.getCause();
    }
    if (e instanceof FerryException) {
      throw (FerryException) e;
    }
    if (e != null) {
      throw new IllegalStateException(e);
    }
  }

  private static Event event(String topic, String prefix, int i) {
    return Event.newBuilder()
        .setTopic(topic)
        .setEventId(prefix + "-" + i)
        .setKey(ByteString.copyFromUtf8("k" + (i % 8)))
        .setPayload(ByteString.copyFromUtf8("payload-" + i))
        .build();
  }

  static String require(String name) {
    String v = System.getenv(name);
    if (v == null || v.isEmpty()) {
      System.err.println(name + " is not set");
      System.exit(2);
    }
    return v;
  }
}
