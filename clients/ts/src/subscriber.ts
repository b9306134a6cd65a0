import type { StatusObject } from "@grpc/grpc-js";
import { Backoff, sleep } from "./backoff.js";
import type { Logger } from "./logger.js";
import { durationMs, FerryError, isFatalSubscribeError, msToDuration } from "./errors.js";
import {
  AckIdStatus,
  type AckResults,
  type DeliveryOrder,
  type Delivery,
  OpenSubscription,
  type StartPosition,
  type SubscribeRequest,
  type SubscribeResponse,
  type SubscriberClient,
} from "./gen/ferry/v1/subscriber.js";

export interface SubscribeOptions {
  subscription: string;
  topics: string[];
  /**
   * Stops the loop: handlers in flight finish (they get this signal to cut their work short)
   * and are acked, then the stream is half-closed.
   */
  signal?: AbortSignal;
  /** Handlers running at once; default 16. */
  concurrency?: number;
  /** Redelivery delay of a failed delivery in ms; default the subscription's backoff. */
  nackDelayMs?: number;
  /** Lease per delivery in ms (Ferry's default 30 s); the loop extends it every half lease while held. */
  leaseMs?: number;
  maxOutstandingEvents?: number;
  maxOutstandingBytes?: number;
  startPosition?: StartPosition;
  deliveryOrder?: DeliveryOrder;
  deadLetterTopic?: string;
  maxDeliveryAttempts?: number;
  minRedeliveryBackoffMs?: number;
  maxRedeliveryBackoffMs?: number;
  /** How long stopping waits for Ferry to answer the last acks before the stream is cancelled; default 10 000 ms. */
  drainTimeoutMs?: number;
}

/**
 * Called once per delivery. Resolving acks it; throwing (or rejecting) nacks it.
 * `signal` aborts when the loop is asked to stop.
 */
export type Handler = (delivery: Delivery, signal: AbortSignal) => Promise<void> | void;

const MAX_IDS_PER_REQUEST = 10_000;
const OK_STATUSES = new Set([AckIdStatus.ACK_ID_STATUS_APPLIED, AckIdStatus.ACK_ID_STATUS_ALREADY_ACKED]);

class Semaphore {
  private waiters: Array<() => void> = [];
  constructor(private free: number) {}
  acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.free++;
  }
}

function chunks(ids: string[]): string[][] {
  const out: string[][] = [];
  for (let i = 0; i < ids.length; i += MAX_IDS_PER_REQUEST) out.push(ids.slice(i, i + MAX_IDS_PER_REQUEST));
  return out;
}

interface StreamEnd {
  opened: boolean;
  error?: FerryError;
}

export async function runSubscriber(
  client: SubscriberClient,
  options: SubscribeOptions,
  handler: Handler,
  logger: Logger,
): Promise<void> {
  const stop = options.signal ?? new AbortController().signal;
  const slots = new Semaphore(options.concurrency ?? 16);
  const handlers = new Set<Promise<void>>();
  const backoff = new Backoff();
  try {
    while (!stop.aborted) {
      const end = await runStream(client, options, handler, logger, stop, slots, handlers);
      if (stop.aborted) break;
      if (end.error && isFatalSubscribeError(end.error)) throw end.error;
      if (end.opened) backoff.reset();
      const delay = Math.max(end.error?.retryDelayMs ?? 0, backoff.next());
      logger.warn(
        `subscription ${options.subscription}: stream ended (${end.error?.message ?? "OK"}); reconnecting in ${Math.round(delay)} ms`,
      );
      await sleep(delay, stop).catch(() => {});
    }
  } finally {
    // Handlers of an ended stream may still run; the loop returns only after them.
    await Promise.allSettled([...handlers]);
  }
}

/** One Subscribe stream, from `open` to its final status. */
function runStream(
  client: SubscriberClient,
  o: SubscribeOptions,
  handler: Handler,
  logger: Logger,
  stop: AbortSignal,
  slots: Semaphore,
  handlers: Set<Promise<void>>,
): Promise<StreamEnd> {
  const call = client.subscribe();
  const held = new Set<string>(); // leased to this stream, not yet acked or nacked
  const mine = new Set<Promise<void>>(); // handlers started on this stream
  let acks: string[] = [];
  let nacks: string[] = [];
  let flushScheduled = false;
  let opened = false;
  let closed = false; // half-closed by us or ended by the server: nothing more is written
  let stopping = false;
  let sent = 0; // requests written; Ferry answers each, in order (`open` with `opened`)
  let answered = 0;
  let leaseMs = o.leaseMs ?? 30_000;
  let extendTimer: NodeJS.Timeout | undefined;

  const send = (request: SubscribeRequest["request"]) => {
    if (closed) return;
    call.write({ request });
    sent++;
  };

  // Ferry keeps a half-closed stream delivering, so once every request is answered the
  // stream is cancelled: the leases still held go back for redelivery at once.
  const finishIfDrained = () => {
    if (stopping && answered >= sent) call.cancel();
  };

  const flush = () => {
    flushScheduled = false;
    for (const ackIds of chunks(acks)) send({ $case: "ack", value: { ackIds } });
    const redeliveryDelay = o.nackDelayMs === undefined ? undefined : msToDuration(o.nackDelayMs);
    for (const ackIds of chunks(nacks)) send({ $case: "nack", value: { ackIds, redeliveryDelay, deadLetter: false } });
    acks = [];
    nacks = [];
  };

  const extend = () => {
    const leaseDuration = msToDuration(leaseMs);
    for (const ackIds of chunks([...held])) send({ $case: "extend", value: { ackIds, leaseDuration } });
  };

  const checkResults = (r: AckResults) => {
    for (const { ackId, status } of r.results) {
      if (!OK_STATUSES.has(status)) logger.warn(`ack id ${ackId}: ${AckIdStatus[status] ?? status}`);
    }
  };

  const dispatch = async (d: Delivery) => {
    await slots.acquire();
    let ok = false;
    try {
      // A delivery still queued when its stream ended or stopping began is left to the server to lease again.
      if (closed || stop.aborted) return;
      try {
        await handler(d, stop);
        ok = true;
      } catch (err) {
        logger.warn(`handler failed for event ${d.event?.eventId} (attempt ${d.deliveryAttempt}): ${String(err)}`);
      }
    } finally {
      slots.release();
    }
    if (!held.delete(d.ackId) || closed) return;
    (ok ? acks : nacks).push(d.ackId);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
  };

  const onData = (msg: SubscribeResponse) => {
    const r = msg.response;
    switch (r?.$case) {
      case "opened":
        answered++; // the answer to `open`
        opened = true;
        leaseMs = durationMs(r.value.leaseDuration) ?? leaseMs;
        extendTimer = setInterval(extend, Math.max(500, leaseMs / 2));
        logger.debug(`subscription ${r.value.subscription} open, lease ${leaseMs} ms`);
        break;
      case "deliveries":
        for (const d of r.value.deliveries) {
          held.add(d.ackId);
          const p = dispatch(d);
          mine.add(p);
          handlers.add(p);
          void p.finally(() => {
            mine.delete(p);
            handlers.delete(p);
          });
        }
        break;
      case "ackResults":
        answered++;
        checkResults(r.value);
        break;
      case "rejected":
        answered++;
        logger.warn(`request rejected: ${r.value.reason} ${r.value.message}`);
        break;
    }
    finishIfDrained();
  };

  const onStop = async () => {
    await Promise.allSettled([...mine]);
    flush();
    if (closed) return;
    closed = true;
    stopping = true;
    clearInterval(extendTimer);
    call.end();
    setTimeout(() => call.cancel(), o.drainTimeoutMs ?? 10_000).unref();
    finishIfDrained();
  };

  return new Promise((resolve) => {
    call.on("data", onData);
    call.on("error", () => {}); // the final status below carries it
    call.on("status", (s: StatusObject) => {
      closed = true;
      clearInterval(extendTimer);
      stop.removeEventListener("abort", onStop);
      resolve({ opened, error: s.code === 0 ? undefined : FerryError.fromStatus(s) });
    });
    stop.addEventListener("abort", onStop, { once: true });
    send({
      $case: "open",
      value: OpenSubscription.fromPartial({
        subscription: o.subscription,
        topics: o.topics,
        leaseDuration: o.leaseMs === undefined ? undefined : msToDuration(o.leaseMs),
        maxOutstandingEvents: o.maxOutstandingEvents,
        maxOutstandingBytes: o.maxOutstandingBytes,
        maxDeliveryAttempts: o.maxDeliveryAttempts,
        deadLetterTopic: o.deadLetterTopic,
        startPosition: o.startPosition,
        deliveryOrder: o.deliveryOrder,
        minRedeliveryBackoff: o.minRedeliveryBackoffMs === undefined ? undefined : msToDuration(o.minRedeliveryBackoffMs),
        maxRedeliveryBackoff: o.maxRedeliveryBackoffMs === undefined ? undefined : msToDuration(o.maxRedeliveryBackoffMs),
      }),
    });
    if (stop.aborted) void onStop();
  });
}
