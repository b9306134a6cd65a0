// Publishing over one PublishStream: requests pipelined without waiting, each answer matched by request_id.
import { type ClientDuplexStream, type StatusObject, status } from "@grpc/grpc-js";
import { Backoff } from "./backoff.js";
import type { Logger } from "./logger.js";
import { FerryError, isRetryablePublishError, msToDuration } from "./errors.js";
import { type BatchOutcome, batchOutcomes, type Bytes, type EventInput, toEvent } from "./events.js";
import {
  AckLevel,
  type Event,
  type PublishResult,
  type PublishStreamAnswer,
  type PublishStreamRequest,
  type PublishStreamResponse,
  type PublisherClient,
} from "./gen/ferry/v1/publisher.js";

export interface StreamPublisherOptions {
  /** Requests sent and not yet answered, at most; `publish` waits for room while the window is full. Default 1024. */
  maxUnanswered?: number;
  /** Default of each request's `timeoutMs`: 60 000. */
  timeoutMs?: number;
  /** Default of each request's `ackLevel`: ACK_LEVEL_DURABLE. */
  ackLevel?: AckLevel;
  /** Default of each request's `kafkaWaitMs`: Ferry's own. */
  kafkaWaitMs?: number;
  /** How long `close` waits for Ferry to end the half-closed stream before cancelling it; default 10 000 ms. */
  closeTimeoutMs?: number;
}

export interface StreamCallOptions {
  /**
   * Total time from the `publish` call to the answer, in ms, across waiting for room, retries and
   * reconnects; default the publisher's (60 000).
   */
  timeoutMs?: number;
  /** When to be answered; default the publisher's (ACK_LEVEL_DURABLE). */
  ackLevel?: AckLevel;
  /** With ACK_LEVEL_KAFKA: how long Ferry waits for Kafka, in ms. */
  kafkaWaitMs?: number;
  /** Aborting it rejects the request with the signal's reason and stops its retries (a sent request may still be logged). */
  signal?: AbortSignal;
}

export type StreamPublishOptions = StreamCallOptions & Omit<EventInput, "topic" | "payload">;

/** A request taken into the stream's window. */
export interface PublishHandle<T> {
  /** The request_id it is sent with (resends keep it). */
  readonly requestId: number;
  /** Its events' ids, fixed before the first send: resends and retries carry the same ones. */
  readonly eventIds: readonly string[];
  /**
   * Settles with Ferry's answer: the result (for `publishBatch`, one outcome per event), or a
   * FerryError. Its rejection is marked handled, so one collected for later cannot crash the
   * process as an unhandled rejection: await it to see the error.
   */
  readonly result: Promise<T>;
}

/** Where a request is: waiting for a stream to be sent on, sent and unanswered, or waiting to retry a refusal. */
type Phase = "queued" | "sent" | "retrying";

interface Pending {
  readonly id: number;
  readonly request: PublishStreamRequest;
  readonly deadline: number;
  readonly backoff: Backoff;
  readonly signal?: AbortSignal;
  phase: Phase;
  /** The stream it was sent on, while `sent`. */
  call?: PublishCall;
  lastError?: FerryError;
  deadlineTimer?: NodeJS.Timeout;
  retryTimer?: NodeJS.Timeout;
  onAbort?: () => void;
  resolve(answer: PublishStreamAnswer): void;
  reject(error: unknown): void;
}

/** A publish waiting for room: given a slot, it enters the window (true) or, past its deadline, gives up (false). */
type Waiter = () => boolean;

interface Admitted {
  requestId: number;
  answer: Promise<PublishStreamAnswer>;
}

function windowTimeout(): FerryError {
  return new FerryError(status.DEADLINE_EXCEEDED, "timeoutMs passed while waiting for room in the stream's window");
}

type PublishCall = ClientDuplexStream<PublishStreamRequest, PublishStreamResponse>;

/** A refusal of one stream request that the same request may overcome later: Ferry is out of room or its log failed. */
function isRetryableRefusal(err: FerryError): boolean {
  return err.code === status.UNAVAILABLE || (err.code === status.RESOURCE_EXHAUSTED && err.reason !== undefined);
}

function single(events: Event[], answer: PublishStreamAnswer): PublishResult {
  const [outcome] = batchOutcomes(events, answer.entries);
  if (outcome.error) throw outcome.error;
  return outcome.result!;
}

/**
 * Publishes over one PublishStream. `publish` and `publishBatch` take a request into a window of
 * at most `maxUnanswered` unanswered requests (waiting while it is full), send it at once without
 * waiting for earlier answers, and hand back its `result` promise. Ferry logs one stream's
 * requests in the order they arrive, so requests keep their publish order. A response from Ferry
 * carries one or more answers (those ready together); each is matched to its request by request_id.
 *
 * A refusal with UNAVAILABLE or RESOURCE_EXHAUSTED (with a reason) is sent again after its
 * retry_delay (at least the backoff) while the request's `timeoutMs` lasts; any other refusal
 * rejects that request's result with a FerryError and the stream goes on. When the stream ends
 * (Ferry draining ends it UNAVAILABLE, a lost connection too), a new one is opened after a
 * backoff and every unanswered request is sent again, in its original order, with the same event
 * ids. A stream end that no retry can help (INVALID_ARGUMENT, INTERNAL, ...) rejects the
 * requests that were on it.
 *
 * Get one from `FerryClient.streamPublisher()`; `close()` it before the client.
 */
export class StreamPublisher {
  private readonly pending = new Map<number, Pending>(); // by request_id, in request order
  private readonly waiters: Waiter[] = []; // publishes waiting for room, in call order
  private readonly idle: Array<() => void> = []; // flush() calls waiting for nothing outstanding
  private readonly backoff = new Backoff(); // between streams; reset by any answer
  private readonly maxUnanswered: number;
  private readonly timeoutMs: number;
  private readonly ackLevel: AckLevel;
  private readonly kafkaWaitMs?: number;
  private readonly closeTimeoutMs: number;
  private inWindow = 0; // slots taken: the requests in `pending`
  private nextId = 1;
  private call?: PublishCall;
  private reconnectTimer?: NodeJS.Timeout;
  private closing = false;
  private closed?: Promise<void>;

  constructor(
    private readonly client: PublisherClient,
    private readonly logger: Logger,
    options: StreamPublisherOptions = {},
  ) {
    this.maxUnanswered = Math.max(1, options.maxUnanswered ?? 1024);
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.ackLevel = options.ackLevel ?? AckLevel.ACK_LEVEL_DURABLE;
    this.kafkaWaitMs = options.kafkaWaitMs;
    this.closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
  }

  /** Requests taken into the window and not yet settled. */
  get unanswered(): number {
    return this.pending.size;
  }

  /**
   * Takes one event into the window (waiting while it is full) and sends it; resolves to its
   * handle, whose `result` settles as `FerryClient.publish` would. Rejects, sending nothing, once
   * the publisher is closing, when `signal` aborts, or when `timeoutMs` passes while waiting for room.
   */
  async publish(topic: string, payload: Bytes | null, options: StreamPublishOptions = {}): Promise<PublishHandle<PublishResult>> {
    const events = [toEvent({ ...options, topic, payload })];
    const { requestId, answer } = await this.admit(events, options);
    return this.handle(requestId, events, answer.then((a) => single(events, a)));
  }

  /** Like `publish` for many events in one request; `result` holds one outcome per event, in order, as `FerryClient.publishBatch`'s. */
  async publishBatch(events: EventInput[], options: StreamCallOptions = {}): Promise<PublishHandle<BatchOutcome[]>> {
    const sent = events.map(toEvent);
    const { requestId, answer } = await this.admit(sent, options);
    return this.handle(requestId, sent, answer.then((a) => batchOutcomes(sent, a.entries)));
  }

  /** Resolves once every request published so far (and any published meanwhile) is settled. */
  flush(): Promise<void> {
    if (this.inWindow === 0 && this.waiters.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  /**
   * Stops taking requests, waits for every outstanding one to settle, then half-closes the stream
   * and waits for Ferry to end it. Later `publish` calls reject.
   */
  close(): Promise<void> {
    this.closed ??= this.shutDown();
    return this.closed;
  }

  private async shutDown(): Promise<void> {
    this.closing = true;
    await this.flush();
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const call = this.call;
    if (!call) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => call.cancel(), this.closeTimeoutMs);
      call.on("status", () => {
        clearTimeout(timer);
        resolve();
      });
      call.end();
    });
  }

  private handle<T>(requestId: number, events: Event[], result: Promise<T>): PublishHandle<T> {
    result.catch(() => {});
    return { requestId, eventIds: events.map((e) => e.eventId), result };
  }

  /**
   * Waits for a slot in the window, then sends the request; `answer` settles with Ferry's answer to it.
   * Slots go to callers in call order, and a caller's request is sent the moment it gets its slot,
   * so requests go out (and get their request_ids) in call order.
   */
  private admit(events: Event[], o: StreamCallOptions): Promise<Admitted> {
    const deadline = Date.now() + (o.timeoutMs ?? this.timeoutMs);
    o.signal?.throwIfAborted();
    if (this.closing) throw new FerryError(status.FAILED_PRECONDITION, "the stream publisher is closed");
    if (this.inWindow < this.maxUnanswered && this.waiters.length === 0) {
      this.inWindow++;
      return Promise.resolve(this.enter(events, o, deadline));
    }
    return new Promise((resolve, reject) => {
      const signal = o.signal;
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const drop = (error: unknown) => {
        const i = this.waiters.indexOf(waiter);
        if (i < 0) return;
        this.waiters.splice(i, 1);
        done();
        reject(error);
        this.wakeIdle();
      };
      const waiter: Waiter = () => {
        done();
        if (Date.now() >= deadline) {
          reject(windowTimeout());
          return false;
        }
        resolve(this.enter(events, o, deadline));
        return true;
      };
      const onAbort = () => drop(signal!.reason);
      const timer = setTimeout(() => drop(windowTimeout()), Math.max(0, deadline - Date.now()));
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Puts the request, holding a slot already, into the window and sends it. */
  private enter(events: Event[], o: StreamCallOptions, deadline: number): Admitted {
    const requestId = this.nextId++;
    const kafkaWaitMs = o.kafkaWaitMs ?? this.kafkaWaitMs;
    const request: PublishStreamRequest = {
      requestId,
      events,
      ackLevel: o.ackLevel ?? this.ackLevel,
      kafkaWait: kafkaWaitMs === undefined ? undefined : msToDuration(kafkaWaitMs),
    };
    const answer = new Promise<PublishStreamAnswer>((resolve, reject) => {
      const p: Pending = { id: requestId, request, deadline, backoff: new Backoff(), signal: o.signal, phase: "queued", resolve, reject };
      this.pending.set(requestId, p);
      p.deadlineTimer = setTimeout(() => this.expire(p), Math.max(0, deadline - Date.now()));
      if (o.signal) {
        p.onAbort = () => this.settle(p, undefined, o.signal!.reason);
        o.signal.addEventListener("abort", p.onAbort, { once: true });
      }
      this.transmit(p);
    });
    return { requestId, answer };
  }

  /** Gives a slot back and hands free slots to waiters, in call order. */
  private release(): void {
    this.inWindow--;
    while (this.inWindow < this.maxUnanswered && this.waiters.length > 0) {
      this.inWindow++;
      if (!this.waiters.shift()!()) this.inWindow--; // its deadline passed as it got the slot
    }
    this.wakeIdle();
  }

  private wakeIdle(): void {
    if (this.inWindow > 0 || this.waiters.length > 0) return;
    for (const resolve of this.idle.splice(0)) resolve();
  }

  /** Sends the request on the current stream, opening one if needed; while a reconnect is pending it waits for that. */
  private transmit(p: Pending): void {
    p.phase = "queued";
    p.call = undefined;
    if (this.reconnectTimer !== undefined) return;
    const call = this.call ?? this.open();
    if (!call) return;
    p.phase = "sent";
    p.call = call;
    call.write(p.request);
  }

  private open(): PublishCall | undefined {
    let call: PublishCall;
    try {
      call = this.client.publishStream();
    } catch (err) {
      // The channel is closed (FerryClient.close): nothing can be sent any more.
      const error = new FerryError(status.CANCELLED, `cannot open a PublishStream: ${String(err)}`, { cause: err });
      for (const p of [...this.pending.values()]) this.settle(p, undefined, error);
      return undefined;
    }
    this.call = call;
    call.on("data", (r: PublishStreamResponse) => this.onResponse(call, r));
    call.on("error", () => {}); // the final status below carries it
    call.on("status", (s: StatusObject) => this.onEnd(call, s));
    return call;
  }

  /** Ferry packs the answers that are ready together into one response: each is matched to its request. */
  private onResponse(call: PublishCall, r: PublishStreamResponse): void {
    this.backoff.reset(); // this stream works
    for (const a of r.answers) this.onAnswer(call, a);
  }

  /** One answer: settles its request, or schedules the retry of a refusal that a retry may overcome. */
  private onAnswer(call: PublishCall, a: PublishStreamAnswer): void {
    const p = this.pending.get(a.requestId);
    if (!p || p.phase !== "sent" || p.call !== call) {
      // Settled already (its deadline passed, or its signal aborted), or Ferry could not decode a message (request_id 0).
      if (a.error) this.logger.warn(`PublishStream answered request ${a.requestId}, which is not waiting: ${a.error.reason} ${a.error.message}`);
      return;
    }
    if (!a.error) return this.settle(p, a);
    const err = FerryError.fromFailure(a.error, a.assignedEventIds);
    if (!isRetryableRefusal(err)) return this.settle(p, undefined, err);
    const delay = Math.max(err.retryDelayMs ?? 0, p.backoff.next());
    if (Date.now() + delay >= p.deadline) return this.settle(p, undefined, err);
    this.logger.debug(`PublishStream request ${p.id} refused (${err.message}); sending it again in ${Math.round(delay)} ms`);
    p.lastError = err;
    p.phase = "retrying";
    p.call = undefined;
    p.retryTimer = setTimeout(() => {
      p.retryTimer = undefined;
      this.transmit(p);
    }, delay);
  }

  private onEnd(call: PublishCall, s: StatusObject): void {
    if (this.call !== call) return;
    this.call = undefined;
    const unanswered = [...this.pending.values()].filter((p) => p.phase === "sent" && p.call === call);
    if (s.code === status.OK && unanswered.length === 0) return; // half-closed by close(), or idle
    const err =
      s.code === status.OK
        ? new FerryError(status.UNAVAILABLE, "PublishStream ended OK with requests unanswered")
        : FerryError.fromStatus(s);
    if (!isRetryablePublishError(err)) {
      this.logger.warn(`PublishStream ended (${err.message}); failing its ${unanswered.length} unanswered requests`);
      for (const p of unanswered) this.settle(p, undefined, err);
      return;
    }
    for (const p of unanswered) {
      p.phase = "queued";
      p.call = undefined;
      p.lastError = err;
    }
    if (this.pending.size === 0) return; // the next publish opens a new stream
    const delay = Math.max(err.retryDelayMs ?? 0, this.backoff.next());
    this.logger.warn(
      `PublishStream ended (${err.message}); a new stream in ${Math.round(delay)} ms sends its ${unanswered.length} unanswered requests again`,
    );
    this.reconnectTimer = setTimeout(() => this.reconnect(), delay);
  }

  /** Opens a new stream and sends every queued request on it, in request order. */
  private reconnect(): void {
    this.reconnectTimer = undefined;
    const queued = [...this.pending.values()].filter((p) => p.phase === "queued");
    if (queued.length === 0) return; // settled meanwhile; a retry or the next publish opens a stream
    const call = this.open();
    if (!call) return;
    for (const p of queued) {
      if (p.phase !== "queued") continue;
      p.phase = "sent";
      p.call = call;
      call.write(p.request);
    }
  }

  /** The deadline passed: the last refusal, or DEADLINE_EXCEEDED when the request may be logged. */
  private expire(p: Pending): void {
    const ids = p.request.events.map((e) => e.eventId);
    const error =
      p.phase === "sent" || p.lastError === undefined
        ? new FerryError(
            status.DEADLINE_EXCEEDED,
            "no answer within timeoutMs; the request may or may not be logged: publish it again with the same event ids",
            { assignedEventIds: ids },
          )
        : p.lastError;
    this.settle(p, undefined, error);
  }

  private settle(p: Pending, answer?: PublishStreamAnswer, error?: unknown): void {
    if (this.pending.get(p.id) !== p) return;
    this.pending.delete(p.id);
    clearTimeout(p.deadlineTimer);
    clearTimeout(p.retryTimer);
    if (p.onAbort) p.signal?.removeEventListener("abort", p.onAbort);
    if (error !== undefined) p.reject(error);
    else p.resolve(answer!);
    this.release();
  }
}
