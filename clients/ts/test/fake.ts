// In-process fake Ferry servers for the unit tests: each call is answered from a script.
import * as grpc from "@grpc/grpc-js";
import {
  AssignedEventIds,
  type PublishRequest,
  PublisherService,
  type PublishStreamAnswer,
  type PublishStreamRequest,
  type PublishStreamResponse,
} from "../src/gen/ferry/v1/publisher.js";
import {
  type SubscribeRequest,
  type SubscribeResponse,
  SubscriberService,
} from "../src/gen/ferry/v1/subscriber.js";
import { BadRequest, ErrorInfo, RetryInfo } from "../src/gen/google/rpc/error_details.js";
import { Status } from "../src/gen/google/rpc/status.js";

export interface FakeError {
  code: grpc.status;
  message?: string;
  reason?: string;
  retryDelayMs?: number;
  badField?: string;
  assignedEventIds?: string[];
}

/** A call's answer: OK, a scripted error, or no answer at all (the client's deadline fires). */
export type Answer = "ok" | "hang" | FakeError;

function any(typeName: string, value: Uint8Array) {
  return { typeUrl: `type.googleapis.com/${typeName}`, value: Buffer.from(value) };
}

/** A ServiceError as Ferry sends it: the details in the grpc-status-details-bin trailer. */
export function serviceError(e: FakeError): Partial<grpc.ServiceError> {
  const details = [];
  if (e.reason) details.push(any("google.rpc.ErrorInfo", ErrorInfo.encode({ reason: e.reason, domain: "ferry.v1", metadata: {} }).finish()));
  if (e.retryDelayMs !== undefined) {
    const retryDelay = { seconds: Math.floor(e.retryDelayMs / 1000), nanos: (e.retryDelayMs % 1000) * 1e6 };
    details.push(any("google.rpc.RetryInfo", RetryInfo.encode({ retryDelay }).finish()));
  }
  if (e.badField) {
    const fieldViolations = [{ field: e.badField, description: "bad", reason: "", localizedMessage: undefined }];
    details.push(any("google.rpc.BadRequest", BadRequest.encode({ fieldViolations }).finish()));
  }
  if (e.assignedEventIds) {
    details.push(any("ferry.v1.AssignedEventIds", AssignedEventIds.encode({ eventIds: e.assignedEventIds }).finish()));
  }
  const metadata = new grpc.Metadata();
  const message = e.message ?? "scripted";
  if (details.length) {
    metadata.add("grpc-status-details-bin", Buffer.from(Status.encode({ code: e.code, message, details }).finish()));
  }
  return { code: e.code, details: message, metadata };
}

export interface FakePublisher {
  address: string;
  requests: PublishRequest[];
  stop(): Promise<void>;
}

/** A Publisher that answers the n-th Publish with script[n] (the last entry repeats). */
export async function fakePublisher(script: Answer[], serverOptions: grpc.ServerOptions = {}): Promise<FakePublisher> {
  const requests: PublishRequest[] = [];
  const server = new grpc.Server(serverOptions);
  server.addService(PublisherService, {
    publish(call: grpc.ServerUnaryCall<PublishRequest, unknown>, callback: grpc.sendUnaryData<unknown>) {
      requests.push(call.request);
      const answer = script[Math.min(requests.length - 1, script.length - 1)];
      if (answer === "hang") return;
      if (answer === "ok") {
        const eventId = call.request.event?.eventId ?? "";
        return callback(null, { result: { eventId, sequence: requests.length, duplicate: false, publishTime: new Date() } });
      }
      callback(serviceError(answer));
    },
    publishBatch(_call: unknown, callback: grpc.sendUnaryData<unknown>) {
      callback({ code: grpc.status.UNIMPLEMENTED });
    },
    publishStream(call: grpc.ServerDuplexStream<PublishStreamRequest, PublishStreamResponse>) {
      call.emit("error", { code: grpc.status.UNIMPLEMENTED, details: "not in this fake" });
    },
  });
  return start(server, requests);
}

/** The answer accepting the request: one result per event (sequence = request_id * 100 + event index). */
export function accepted(r: PublishStreamRequest): PublishStreamAnswer {
  const entries = r.events.map((e, i) => ({
    outcome: {
      $case: "result" as const,
      value: { eventId: e.eventId, sequence: r.requestId * 100 + i, duplicate: false, publishTime: new Date() },
    },
  }));
  return { requestId: r.requestId, entries, assignedEventIds: [] };
}

/** The answer refusing the request with an error (a ferry.v1.Failure), as Ferry refuses one request. */
export function refused(r: PublishStreamRequest, e: FakeError): PublishStreamAnswer {
  const retryDelay = e.retryDelayMs === undefined ? undefined : { seconds: Math.floor(e.retryDelayMs / 1000), nanos: (e.retryDelayMs % 1000) * 1e6 };
  return {
    requestId: r.requestId,
    entries: [],
    error: { code: e.code, message: e.message ?? "scripted", reason: e.reason ?? "", field: e.badField ?? "", retryDelay },
    assignedEventIds: e.assignedEventIds ?? [],
  };
}

/** One PublishStream of the fake: what it received, and ways to answer or end it. */
export interface StreamCtl {
  /** The stream's number, from 1. */
  n: number;
  /** This stream's requests, in arrival order. */
  requests: PublishStreamRequest[];
  /** The request_ids received on this stream and not answered yet. */
  unanswered: Set<number>;
  /** The client half-closed the stream. */
  halfClosed: boolean;
  /** The stream is over (ended by either side). */
  ended: boolean;
  /** Accepts the request (`accepted`) in a response of its own. */
  ok(r: PublishStreamRequest): void;
  /** Refuses the request (`refused`) in a response of its own. */
  refuse(r: PublishStreamRequest, e: FakeError): void;
  /** Sends the answers together in one response, as Ferry sends the answers ready at one moment. */
  send(...answers: PublishStreamAnswer[]): void;
  /** Ends the stream with a status, as Ferry's drain (UNAVAILABLE SHUTTING_DOWN) or a failure. */
  fail(e: FakeError): void;
}

export interface FakeStreamPublisher {
  address: string;
  /** Every stream, in the order they were opened. */
  streams: StreamCtl[];
  /** Every request of every stream, in arrival order, with its stream's number. */
  requests: Array<{ stream: number; request: PublishStreamRequest }>;
  /** The most requests one stream held unanswered at once. */
  maxUnanswered(): number;
  stop(): Promise<void>;
}

/**
 * A Publisher whose PublishStream calls `onRequest` for every request (by default: answer it
 * OK at once). Like Ferry, a half-closed stream ends OK once every request on it is answered.
 */
export async function fakeStreamPublisher(
  onRequest: (s: StreamCtl, r: PublishStreamRequest) => void = (s, r) => s.ok(r),
): Promise<FakeStreamPublisher> {
  const requests: FakeStreamPublisher["requests"] = [];
  const streams: StreamCtl[] = [];
  let maxUnanswered = 0;
  const server = new grpc.Server();
  server.addService(PublisherService, {
    publishStream(call: grpc.ServerDuplexStream<PublishStreamRequest, PublishStreamResponse>) {
      const endIfDone = () => {
        if (s.halfClosed && s.unanswered.size === 0 && !s.ended) {
          s.ended = true;
          call.end();
        }
      };
      const s: StreamCtl = {
        n: streams.length + 1,
        requests: [],
        unanswered: new Set(),
        halfClosed: false,
        ended: false,
        send(...answers) {
          if (s.ended) return;
          for (const a of answers) s.unanswered.delete(a.requestId);
          const response: PublishStreamResponse = { answers };
          call.write(response);
          endIfDone();
        },
        ok: (r) => s.send(accepted(r)),
        refuse: (r, e) => s.send(refused(r, e)),
        fail(e) {
          if (s.ended) return;
          s.ended = true;
          call.emit("error", serviceError(e));
        },
      };
      streams.push(s);
      call.on("data", (r: PublishStreamRequest) => {
        if (s.ended) return;
        requests.push({ stream: s.n, request: r });
        s.requests.push(r);
        s.unanswered.add(r.requestId);
        maxUnanswered = Math.max(maxUnanswered, s.unanswered.size);
        onRequest(s, r);
      });
      call.on("end", () => {
        s.halfClosed = true;
        endIfDone();
      });
      call.on("error", () => {});
      call.on("cancelled", () => (s.ended = true));
    },
  });
  const started = await start(server, requests);
  return { ...started, streams, maxUnanswered: () => maxUnanswered };
}

export interface FakeSubscriber {
  address: string;
  /** Every request of every stream, in order, tagged with its stream's number (from 1). */
  requests: Array<{ stream: number; request: SubscribeRequest }>;
  stop(): Promise<void>;
}

/**
 * A Subscriber whose n-th stream is played by streams[n] (the last one repeats): it gets the
 * stream's number and a way to send responses or end the stream with an error.
 */
export async function fakeSubscriber(
  streams: Array<(ctl: { n: number; send(r: SubscribeResponse): void; fail(e: FakeError): void }) => void>,
): Promise<FakeSubscriber> {
  const requests: FakeSubscriber["requests"] = [];
  let count = 0;
  const server = new grpc.Server();
  server.addService(SubscriberService, {
    subscribe(call: grpc.ServerDuplexStream<SubscribeRequest, SubscribeResponse>) {
      const n = ++count;
      let ended = false;
      call.on("data", (request: SubscribeRequest) => {
        requests.push({ stream: n, request });
        // Like Ferry: every request after `open` is answered, in order.
        const r = request.request;
        if (r && r.$case !== "open" && !ended) {
          const results = r.value.ackIds.map((ackId) => ({ ackId, status: 1 }));
          call.write({ response: { $case: "ackResults", value: { results } } });
        }
      });
      call.on("error", () => {});
      call.on("cancelled", () => (ended = true));
      streams[Math.min(n - 1, streams.length - 1)]({
        n,
        send: (r) => !ended && call.write(r),
        fail: (e) => {
          ended = true;
          call.emit("error", serviceError(e));
        },
      });
    },
    ack: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED }),
    nack: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED }),
    extendLease: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED }),
  });
  return start(server, requests);
}

async function start<R>(server: grpc.Server, requests: R[]) {
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    requests,
    stop: async () => server.forceShutdown(),
  };
}
