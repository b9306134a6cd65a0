package dev.ferry.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.UUID;
import org.junit.jupiter.api.Test;

class EventIdsTest {
  static final String UUID_V7 = "[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}";

  @Test
  void layoutIsUuidV7() {
    UUID id = EventIds.uuidV7(0x0123_4567_89ABL, -1L, -1L);
    assertEquals(7, id.version());
    assertEquals(2, id.variant());
    assertEquals(0x0123_4567_89ABL, id.getMostSignificantBits() >>> 16);
    assertTrue(EventIds.newUuidV7().matches(UUID_V7));
  }

  @Test
  void idsOfLaterMillisecondsSortLater() throws InterruptedException {
    String first = EventIds.newUuidV7();
    Thread.sleep(2);
    String second = EventIds.newUuidV7();
    assertTrue(first.compareTo(second) < 0, first + " < " + second);
  }
}
