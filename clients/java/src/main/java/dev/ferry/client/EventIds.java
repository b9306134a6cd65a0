package dev.ferry.client;

import java.security.SecureRandom;
import java.util.UUID;

/** Event ids as Ferry assigns them itself: time-ordered UUIDv7 (RFC 9562). */
public final class EventIds {
  private static final SecureRandom RANDOM = new SecureRandom();

  private EventIds() {}

  /** A new UUIDv7: 48 bits of Unix milliseconds, then 74 random bits. */
  public static String newUuidV7() {
    return uuidV7(System.currentTimeMillis(), RANDOM.nextLong(), RANDOM.nextLong()).toString();
  }

  static UUID uuidV7(long unixMillis, long randA, long randB) {
    long msb = (unixMillis & 0xFFFF_FFFF_FFFFL) << 16 | 0x7000L | (randA & 0x0FFFL);
    long lsb = (randB & 0x3FFF_FFFF_FFFF_FFFFL) | 0x8000_0000_0000_0000L;
    return new UUID(msb, lsb);
  }
}
