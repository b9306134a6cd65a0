package dev.ferry.client;

import dev.ferry.v1.Delivery;

/**
 * Processes one delivery. Returning normally acks it; throwing nacks it, and it comes again with
 * {@code delivery_attempt} + 1. Deliveries are at least once: a handler must tolerate repeats.
 */
@FunctionalInterface
public interface DeliveryHandler {
  void handle(Delivery delivery) throws Exception;
}
