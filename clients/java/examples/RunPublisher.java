import com.google.protobuf.ByteString;
import dev.ferry.client.FerryClient;
import dev.ferry.client.FerryException;
import dev.ferry.v1.Event;

/**
 * Publishes COUNT events to TOPIC one call at a time (ids ID_PREFIX-i, keys k{i % 8}, payloads
 * payload-i), then prints {"published": COUNT}. Exits 1 on an error the client does not retry.
 */
public final class RunPublisher {
  public static void main(String[] args) {
    String topic = require("TOPIC");
    int count = Integer.parseInt(require("COUNT"));
    String prefix = require("ID_PREFIX");
    try (FerryClient ferry = FerryClient.fromEnv()) {
      for (int i = 0; i < count; i++) {
        ferry.publish(
            Event.newBuilder()
                .setTopic(topic)
                .setEventId(prefix + "-" + i)
                .setKey(ByteString.copyFromUtf8("k" + (i % 8)))
                .setPayload(ByteString.copyFromUtf8("payload-" + i))
                .build());
      }
    } catch (FerryException e) {
      System.err.println("publish failed: " + e.getMessage());
      System.exit(1);
    }
    System.out.println("{\"published\": " + count + "}");
    System.exit(0);
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
