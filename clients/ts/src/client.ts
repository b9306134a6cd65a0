import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { Backoff, sleep } from "./backoff.js";
import { FerryError, isRetryablePublishError, msToDuration } from "./errors.js";
import { type BatchOutcome, batchOutcomes, type Bytes, type EventInput, toEvent } from "./events.js";
import {
  AckLevel,
  PublishBatchRequest,
  type PublishBatchResponse,
  PublishRequest,
  type PublishResponse,
  type PublishResult,
  PublisherClient,
} from "./gen/ferry/v1/publisher.js";
import { SubscriberClient } from "./gen/ferry/v1/subscriber.js";
import { StreamPublisher, type StreamPublisherOptions } from "./stream.js";
import { type Handler, type SubscribeOptions, runSubscriber } from "./subscriber.js";
import { type Logger, stderrLogger } from "./logger.js";
import { type Credentials, transport } from "./credentials.js";

export type { BatchOutcome, Bytes, EventInput, HeadersInput } from "./events.js";

export interface FerryClientOptions {
  /** host:port of the sidecar; default $FERRY_ADDR, else 127.0.0.1:50051. */
  address?: string;
  /**
   * A gRPC service config (JSON text or object) for the channel, e.g. from
   * `loadServiceConfig("proto/ferry/v1/grpc_service_config.json")`. Off by
   * default: the client's own retry loop already covers those codes.
   */
  serviceConfig?: string | object;
  /** Extra grpc-js channel options. */
  channelOptions?: grpc.ChannelOptions;
  /** TLS and a bearer token (`credentialsFromEnv()` reads them from FERRY_TLS_* and FERRY_TOKEN_FILE); default plaintext. */
  credentials?: Credentials;
  logger?: Logger;
}

export interface CallOptions {
  /** Total time across all attempts, in ms; default 60 000. */
  timeoutMs?: number;
  /** Deadline of one attempt, in ms (capped by what is left of timeoutMs); default 20 000. */
  attemptTimeoutMs?: number;
  /** When to be answered; default ACK_LEVEL_DURABLE. */
  ackLevel?: AckLevel;
  /** With ACK_LEVEL_KAFKA: how long Ferry waits for Kafka, in ms. */
  kafkaWaitMs?: number;
  /** Aborting it cancels the call and rejects with the signal's reason; it is not retried. */
  signal?: AbortSignal;
}

export type PublishOptions = CallOptions & Omit<EventInput, "topic" | "payload">;

/** Reads a gRPC service config file (such as the repo's grpc_service_config.json). */
export function loadServiceConfig(path: string): object {
  return JSON.parse(readFileSync(path, "utf8")) as object;
}

type UnaryCallback<Res> = (err: grpc.ServiceError | null, res?: Res) => void;
type UnaryInvoker<Res> = (md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: UnaryCallback<Res>) => grpc.ClientUnaryCall;

/** A Ferry sidecar connection: retrying publishes and a subscriber loop over one gRPC channel. */
export class FerryClient {
  /** The generated clients, for calls this wrapper does not cover. */
  readonly publisher: PublisherClient;
  readonly subscriber: SubscriberClient;
  readonly address: string;
  private readonly logger: Logger;

  /** Throws when `credentials` cannot work: a file that cannot be read, a token in the clear to a remote address. */
  constructor(options: FerryClientOptions = {}) {
    this.address = options.address ?? (process.env.FERRY_ADDR || "127.0.0.1:50051");
    this.logger = options.logger ?? stderrLogger;
    const secured = transport(this.address, options.credentials);
    const channelOptions: grpc.ChannelOptions = {
      ...secured.options,
      // Reconnect promptly once Ferry is back after a restart (grpc-js waits up to 120 s by default).
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 5000,
      // Ferry sends a record larger than its delivery budget alone, in a message of any size.
      "grpc.max_receive_message_length": -1,
      ...options.channelOptions,
    };
    if (options.serviceConfig !== undefined) {
      channelOptions["grpc.service_config"] =
        typeof options.serviceConfig === "string" ? options.serviceConfig : JSON.stringify(options.serviceConfig);
    }
    const { credentials, interceptors } = secured;
    this.publisher = new PublisherClient(this.address, credentials, { ...channelOptions, interceptors });
    this.subscriber = new SubscriberClient(this.address, credentials, {
      channelOverride: this.publisher.getChannel(),
      interceptors,
    });
  }

  /**
   * Publishes one event and resolves with Ferry's result. Retries UNAVAILABLE,
   * RESOURCE_EXHAUSTED with an ErrorInfo (after its RetryInfo delay), CANCELLED
   * not asked for by the caller, and an attempt's DEADLINE_EXCEEDED, always with
   * the same event id, so a retry never creates a duplicate. Rejects with a
   * FerryError otherwise.
   */
  async publish(topic: string, payload: Bytes | null, options: PublishOptions = {}): Promise<PublishResult> {
    const request = PublishRequest.fromPartial({
      event: toEvent({ ...options, topic, payload }),
      ackLevel: options.ackLevel ?? AckLevel.ACK_LEVEL_DURABLE,
      kafkaWait: options.kafkaWaitMs === undefined ? undefined : msToDuration(options.kafkaWaitMs),
    });
    const response = await this.withRetries<PublishResponse>("Publish", options, (md, opts, cb) =>
      this.publisher.publish(request, md, opts, cb),
    );
    if (!response.result) throw new FerryError(grpc.status.INTERNAL, "Publish answered without a result");
    return response.result;
  }

  /** Publishes events in one write, retried as a whole like `publish`; one outcome per event, in order. */
  async publishBatch(events: EventInput[], options: CallOptions = {}): Promise<BatchOutcome[]> {
    const request = PublishBatchRequest.fromPartial({
      events: events.map(toEvent),
      ackLevel: options.ackLevel ?? AckLevel.ACK_LEVEL_DURABLE,
      kafkaWait: options.kafkaWaitMs === undefined ? undefined : msToDuration(options.kafkaWaitMs),
    });
    const response = await this.withRetries<PublishBatchResponse>("PublishBatch", options, (md, opts, cb) =>
      this.publisher.publishBatch(request, md, opts, cb),
    );
    return batchOutcomes(request.events, response.entries);
  }

  /**
   * A publisher over one PublishStream: requests are pipelined without waiting for answers,
   * at most `maxUnanswered` (default 1024) at a time, with the retries of `publish` and
   * reconnects that send unanswered requests again with the same event ids; see StreamPublisher.
   * Close it before this client.
   */
  streamPublisher(options: StreamPublisherOptions = {}): StreamPublisher {
    return new StreamPublisher(this.publisher, this.logger, options);
  }

  /**
   * Runs a subscriber loop until `options.signal` aborts; see SubscribeOptions.
   * Resolves once stopped cleanly; rejects with a FerryError on INVALID_ARGUMENT
   * or FAILED_PRECONDITION (a wrong subscription request).
   */
  subscribe(options: SubscribeOptions, handler: Handler): Promise<void> {
    return runSubscriber(this.subscriber, options, handler, this.logger);
  }

  close(): void {
    this.subscriber.close();
    this.publisher.close();
  }

  private async withRetries<Res>(method: string, options: CallOptions, invoke: UnaryInvoker<Res>): Promise<Res> {
    const signal = options.signal;
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    const attemptTimeoutMs = options.attemptTimeoutMs ?? 20_000;
    const backoff = new Backoff();
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      try {
        return await callUnary(invoke, Math.min(deadline, Date.now() + attemptTimeoutMs), signal);
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (!(err instanceof FerryError) || !isRetryablePublishError(err)) throw err;
        const delay = Math.max(err.retryDelayMs ?? 0, backoff.next());
        if (Date.now() + delay >= deadline) throw err;
        this.logger.warn(`${method} attempt ${attempt} failed (${err.message}); retrying in ${Math.round(delay)} ms`);
        await sleep(delay, signal);
      }
    }
  }
}

function callUnary<Res>(invoke: UnaryInvoker<Res>, deadline: number, signal?: AbortSignal): Promise<Res> {
  return new Promise((resolve, reject) => {
    const onAbort = () => call.cancel();
    const call = invoke(new grpc.Metadata(), { deadline }, (err, res) => {
      signal?.removeEventListener("abort", onAbort);
      if (err) reject(FerryError.fromStatus(err, err));
      else resolve(res as Res);
    });
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
