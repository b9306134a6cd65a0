// The stream publisher against an in-process fake PublishStream.
import assert from "node:assert/strict";
import { test } from "node:test";
import { validate as isUuid, version as uuidVersion } from "uuid";
import { Code, FerryClient, FerryError, type Logger, type PublishHandle, type PublishResult } from "../src/index.js";
import type { PublishStreamRequest } from "../src/gen/ferry/v1/publisher.js";
import { accepted, type FakeStreamPublisher, fakeStreamPublisher, refused, type StreamCtl } from "./fake.js";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };
// Generous for a loaded machine: each test finishes in well under a second when nothing is wrong.
const opts = { timeout: 60_000 };

/** Resolves once `cond` holds; polls, so it only ever waits for something that happens anyway. */
function until(cond: () => boolean, what = "condition", timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () =>
      cond() ? resolve() : Date.now() - started > timeoutMs ? reject(new Error(`timed out waiting for ${what}`)) : setTimeout(tick, 5);
    tick();
  });
}

const ids = (rs: PublishStreamRequest[]) => rs.map((r) => r.events.map((e) => e.eventId).join("+"));

async function withFake(
  onRequest: ((s: StreamCtl, r: PublishStreamRequest) => void) | undefined,
  body: (srv: FakeStreamPublisher, client: FerryClient) => Promise<void>,
  logger: Logger = quiet,
): Promise<void> {
  const srv = await fakeStreamPublisher(onRequest);
  const client = new FerryClient({ address: srv.address, logger });
  try {
    await body(srv, client);
  } finally {
    client.close();
    await srv.stop();
  }
}

test("answers are matched by request_id when they come out of order, several in one response; event ids are set before the first send", opts, async () => {
  // Holds the first three requests, then answers 2 and 1 together in one response, and 3 in another.
  await withFake(
    (s) => {
      if (s.requests.length < 3) return;
      s.send(accepted(s.requests[1]), accepted(s.requests[0]));
      s.ok(s.requests[2]);
    },
    async (srv, client) => {
      const stream = client.streamPublisher();
      const a = await stream.publish("t", "a", { eventId: "a", key: "ka" });
      const b = await stream.publish("t", "b", { eventId: "b" });
      const c = await stream.publish("t", "c"); // gets a UUIDv7
      assert.deepEqual([a.requestId, b.requestId, c.requestId], [1, 2, 3]);
      assert.ok(isUuid(c.eventIds[0]) && uuidVersion(c.eventIds[0]) === 7, c.eventIds[0]);
      const results = await Promise.all([a.result, b.result, c.result]);
      assert.deepEqual(
        results.map((r) => [r.eventId, r.sequence]),
        [
          ["a", 100],
          ["b", 200],
          [c.eventIds[0], 300],
        ],
      );
      const sent = srv.requests.map((q) => q.request);
      assert.deepEqual(ids(sent), ["a", "b", c.eventIds[0]]);
      assert.equal(sent[0].events[0].key?.toString(), "ka");
      await stream.close();
      assert.equal(srv.streams.length, 1);
    },
  );
});

test("every answer of one response is handled: a stale one is logged, a retryable refusal retried, a permanent one fails only its request", opts, async () => {
  // Holds four requests, then sends one response answering, in this order: request_id 0 (a
  // message Ferry could not decode: nothing waits for it), 3 refused for good, 2 accepted, 1
  // refused LOG_FULL (sent again and accepted), 4 accepted.
  const warnings: string[] = [];
  const logger: Logger = { ...quiet, warn: (m) => warnings.push(m) };
  await withFake(
    (s, r) => {
      if (s.requests.length > 4) return s.ok(r); // the resend of request 1
      if (s.requests.length < 4) return;
      const [one, two, three, four] = s.requests;
      s.send(
        { requestId: 0, entries: [], error: { code: Code.INVALID_ARGUMENT, message: "undecodable", reason: "REQUEST_UNDECODABLE", field: "" }, assignedEventIds: [] },
        refused(three, { code: Code.INVALID_ARGUMENT, reason: "FIELD_INVALID", badField: "events[0].topic" }),
        accepted(two),
        refused(one, { code: Code.RESOURCE_EXHAUSTED, reason: "LOG_FULL", retryDelayMs: 100 }),
        accepted(four),
      );
    },
    async (srv, client) => {
      const stream = client.streamPublisher();
      const hs = [];
      for (const id of ["one", "two", "three", "four"]) hs.push(await stream.publish("t", "p", { eventId: id }));
      const [one, two, three, four] = await Promise.allSettled(hs.map((h) => h.result));
      assert.deepEqual(
        [one, two, four].map((o) => o.status === "fulfilled" && [o.value.eventId, o.value.sequence]),
        [
          ["one", 100],
          ["two", 200],
          ["four", 400],
        ],
      );
      assert.ok(three.status === "rejected" && three.reason instanceof FerryError);
      assert.equal(three.reason.code, Code.INVALID_ARGUMENT);
      assert.equal(three.reason.reason, "FIELD_INVALID");
      assert.deepEqual(
        srv.requests.map((q) => [q.stream, q.request.requestId, q.request.events[0].eventId]),
        [
          [1, 1, "one"],
          [1, 2, "two"],
          [1, 3, "three"],
          [1, 4, "four"],
          [1, 1, "one"],
        ],
        "only the LOG_FULL refusal is sent again, on the same stream with the same request_id and event id",
      );
      assert.equal(warnings.length, 1, warnings.join("\n"));
      assert.match(warnings[0], /request 0, which is not waiting: REQUEST_UNDECODABLE/);
      await stream.close();
    },
    logger,
  );
});

test("publishBatch answers one outcome per event, an entry's refusal in its outcome", opts, async () => {
  await withFake(
    (s, r) =>
      s.send({
        requestId: r.requestId,
        entries: [
          { outcome: { $case: "result", value: { eventId: r.events[0].eventId, sequence: 7, duplicate: false, publishTime: new Date() } } },
          { outcome: { $case: "error", value: { code: Code.ALREADY_EXISTS, message: "other content", reason: "EVENT_ID_CONFLICT", field: "" } } },
        ],
        assignedEventIds: [],
      }),
    async (_srv, client) => {
      const stream = client.streamPublisher();
      const h = await stream.publishBatch([
        { topic: "t", payload: "1", eventId: "one" },
        { topic: "t", payload: "2", eventId: "two" },
      ]);
      assert.deepEqual(h.eventIds, ["one", "two"]);
      const [first, second] = await h.result;
      assert.equal(first.result?.sequence, 7);
      assert.equal(second.eventId, "two");
      assert.ok(second.error instanceof FerryError);
      assert.equal(second.error.code, Code.ALREADY_EXISTS);
      assert.equal(second.error.reason, "EVENT_ID_CONFLICT");
      await stream.close();
    },
  );
});

test("a RESOURCE_EXHAUSTED refusal is sent again after its retry_delay, with the same event id", opts, async () => {
  let refusedAt = 0;
  let resentAt = 0;
  await withFake(
    (s, r) => {
      const id = r.events[0].eventId;
      if (id === "full" && refusedAt === 0) {
        refusedAt = Date.now();
        return s.refuse(r, { code: Code.RESOURCE_EXHAUSTED, reason: "LOG_FULL", retryDelayMs: 700 });
      }
      if (id === "full") resentAt = Date.now();
      s.ok(r);
    },
    async (srv, client) => {
      const stream = client.streamPublisher();
      const full = await stream.publish("t", "p", { eventId: "full" });
      await until(() => refusedAt > 0, "the refusal");
      const next = await stream.publish("t", "p", { eventId: "next" });
      assert.equal((await next.result).eventId, "next", "the stream goes on after a refusal");
      const r = await full.result;
      assert.equal(r.eventId, "full");
      assert.ok(resentAt - refusedAt >= 690, `sent again after ${resentAt - refusedAt} ms`);
      const fulls = srv.requests.filter((q) => q.request.events[0].eventId === "full");
      assert.equal(fulls.length, 2);
      assert.ok(fulls.every((q) => q.stream === 1 && q.request.requestId === full.requestId));
      await stream.close();
    },
  );
});

test("after UNAVAILABLE SHUTTING_DOWN the unanswered requests are sent again on a new stream, in order, same event ids", opts, async () => {
  // Stream 1 reads five requests, answers the first two, then drains; stream 2 answers everything.
  await withFake(
    (s, r) => {
      if (s.n > 1) return s.ok(r);
      if (s.requests.length < 5) return;
      s.ok(s.requests[0]);
      s.ok(s.requests[1]);
      s.fail({ code: Code.UNAVAILABLE, reason: "SHUTTING_DOWN", retryDelayMs: 50 });
    },
    async (srv, client) => {
      const stream = client.streamPublisher();
      const handles: Array<PublishHandle<PublishResult>> = [];
      for (let i = 0; i < 5; i++) handles.push(await stream.publish("t", `p${i}`, { key: `k${i % 2}` }));
      const results = await Promise.all(handles.map((h) => h.result));
      assert.deepEqual(
        results.map((r) => r.eventId),
        handles.map((h) => h.eventIds[0]),
      );
      assert.equal(srv.streams.length, 2);
      assert.deepEqual(ids(srv.streams[0].requests), handles.map((h) => h.eventIds[0]));
      assert.deepEqual(ids(srv.streams[1].requests), handles.slice(2).map((h) => h.eventIds[0]), "only the unanswered, in order");
      assert.deepEqual(
        srv.streams[1].requests.map((r) => r.requestId),
        [3, 4, 5],
      );
      await stream.close();
    },
  );
});

test("a stream end no retry helps (INTERNAL) fails the requests on it; the next publish opens a new stream", opts, async () => {
  await withFake(
    (s, r) => {
      if (s.n > 1) return s.ok(r);
      if (s.requests.length < 3) return;
      s.ok(s.requests[0]);
      s.fail({ code: Code.INTERNAL, reason: "INTERNAL" });
    },
    async (srv, client) => {
      const stream = client.streamPublisher();
      const hs = [];
      for (let i = 0; i < 3; i++) hs.push(await stream.publish("t", "p", { eventId: `e${i}` }));
      assert.equal((await hs[0].result).eventId, "e0");
      for (const h of hs.slice(1)) {
        await assert.rejects(h.result, (e: unknown) => e instanceof FerryError && e.code === Code.INTERNAL);
      }
      const later = await stream.publish("t", "p", { eventId: "later" });
      assert.equal((await later.result).eventId, "later");
      assert.deepEqual(srv.streams.map((s) => ids(s.requests)), [["e0", "e1", "e2"], ["later"]], "nothing resent");
      await stream.close();
    },
  );
});

test("a refusal no retry helps fails only that request; the others are answered", opts, async () => {
  await withFake(
    (s, r) => {
      const id = r.events[0].eventId;
      if (id === "bad") return s.refuse(r, { code: Code.INVALID_ARGUMENT, reason: "FIELD_INVALID", badField: "events[0].topic" });
      if (id === "slow") return s.refuse(r, { code: Code.DEADLINE_EXCEEDED, reason: "KAFKA_ACK_TIMEOUT", assignedEventIds: ["slow"] });
      s.ok(r);
    },
    async (srv, client) => {
      const stream = client.streamPublisher();
      const hs = [];
      for (const id of ["good1", "bad", "slow", "good2"]) hs.push(await stream.publish("t", "p", { eventId: id }));
      const [good1, bad, slow, good2] = await Promise.allSettled(hs.map((h) => h.result));
      assert.equal(good1.status === "fulfilled" && good1.value.eventId, "good1");
      assert.equal(good2.status === "fulfilled" && good2.value.eventId, "good2");
      assert.ok(bad.status === "rejected" && bad.reason instanceof FerryError);
      assert.equal(bad.reason.code, Code.INVALID_ARGUMENT);
      assert.equal(bad.reason.reason, "FIELD_INVALID");
      assert.deepEqual(bad.reason.fieldViolations.map((v: { field: string }) => v.field), ["events[0].topic"]);
      assert.ok(slow.status === "rejected" && slow.reason instanceof FerryError);
      assert.equal(slow.reason.code, Code.DEADLINE_EXCEEDED);
      assert.equal(slow.reason.reason, "KAFKA_ACK_TIMEOUT");
      assert.deepEqual(slow.reason.assignedEventIds, ["slow"]);
      assert.equal(srv.requests.length, 4, "no request is sent twice");
      await stream.close();
    },
  );
});

test("at most maxUnanswered requests are unanswered; publish waits for room and keeps call order", opts, async () => {
  let answering = false;
  await withFake(
    (s, r) => {
      if (answering) s.ok(r);
    },
    async (srv, client) => {
      const stream = client.streamPublisher({ maxUnanswered: 4 });
      const admitted: boolean[] = [];
      const calls = Array.from({ length: 7 }, (_, i) =>
        stream.publish("t", "p", { eventId: `e${i}` }).then((h) => {
          admitted[i] = true;
          return h;
        }),
      );
      await until(() => srv.requests.length === 4, "four requests");
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(stream.unanswered, 4);
      assert.deepEqual([admitted[4], admitted[5], admitted[6]], [undefined, undefined, undefined], "no room: still waiting");

      const first = srv.streams[0];
      first.ok(first.requests[0]); // one slot frees: the fifth call, and only it, gets in
      await calls[4];
      await until(() => srv.requests.length === 5, "the fifth request");
      assert.equal(admitted[5], undefined);

      answering = true;
      for (const r of [...first.requests]) if (first.unanswered.has(r.requestId)) first.ok(r);
      const handles = await Promise.all(calls);
      await Promise.all(handles.map((h) => h.result));
      assert.deepEqual(ids(srv.requests.map((q) => q.request)), ["e0", "e1", "e2", "e3", "e4", "e5", "e6"]);
      assert.ok(srv.maxUnanswered() <= 4, `the fake held ${srv.maxUnanswered()} unanswered`);
      await stream.close();
    },
  );
});

test("close() waits for every outstanding request, then half-closes; the stream ends OK and nothing more happens", opts, async () => {
  await withFake(
    () => {},
    async (srv, client) => {
      const stream = client.streamPublisher();
      const hs = [];
      for (let i = 0; i < 3; i++) hs.push(await stream.publish("t", "p", { eventId: `e${i}` }));
      let closed = false;
      const closing = stream.close().then(() => (closed = true));
      await assert.rejects(stream.publish("t", "p"), (e: unknown) => e instanceof FerryError && e.code === Code.FAILED_PRECONDITION);
      await until(() => srv.requests.length === 3, "three requests");
      const s = srv.streams[0];
      assert.equal(s.halfClosed, false, "not half-closed while requests are unanswered");
      assert.equal(closed, false);
      for (const r of s.requests) s.ok(r);
      await closing;
      assert.equal(s.halfClosed, true);
      assert.equal(s.ended, true);
      assert.deepEqual(
        (await Promise.all(hs.map((h) => h.result))).map((r) => r.eventId),
        ["e0", "e1", "e2"],
      );
      assert.equal(srv.streams.length, 1, "no new stream after the OK end");
      assert.equal(srv.requests.length, 3);
    },
  );
});

test("a request unanswered past its timeoutMs fails DEADLINE_EXCEEDED with its event ids", opts, async () => {
  await withFake(
    () => {},
    async (_srv, client) => {
      const stream = client.streamPublisher({ timeoutMs: 300, closeTimeoutMs: 200 });
      const h = await stream.publish("t", "p", { eventId: "lost" });
      await assert.rejects(
        h.result,
        (e: unknown) => e instanceof FerryError && e.code === Code.DEADLINE_EXCEEDED && e.assignedEventIds?.[0] === "lost",
      );
      assert.equal(stream.unanswered, 0);
      await stream.close();
    },
  );
});
