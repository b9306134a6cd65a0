// Retry classification and the publish retry loop, against in-process fake servers.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { validate as isUuid, version as uuidVersion } from "uuid";
import { Code, FerryClient, FerryError, isRetryablePublishError, loadServiceConfig, type Logger } from "../src/index.js";
import { fakePublisher, serviceError } from "./fake.js";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

test("classification: which codes a publish retries", () => {
  const err = (code: grpc.status, reason?: string) => new FerryError(code, "x", reason ? { errorInfo: { reason, domain: "ferry.v1", metadata: {} } } : {});
  assert.equal(isRetryablePublishError(err(Code.UNAVAILABLE, "SHUTTING_DOWN")), true);
  assert.equal(isRetryablePublishError(err(Code.UNAVAILABLE)), true);
  assert.equal(isRetryablePublishError(err(Code.DEADLINE_EXCEEDED, "LOG_COMMIT_TIMEOUT")), true);
  assert.equal(isRetryablePublishError(err(Code.DEADLINE_EXCEEDED)), true);
  assert.equal(isRetryablePublishError(err(Code.CANCELLED)), true);
  assert.equal(isRetryablePublishError(err(Code.CANCELLED), true), false, "a cancel the caller asked for");
  assert.equal(isRetryablePublishError(err(Code.RESOURCE_EXHAUSTED, "LOG_FULL")), true);
  assert.equal(isRetryablePublishError(err(Code.RESOURCE_EXHAUSTED)), false, "no ErrorInfo: oversized request");
  for (const code of [Code.INVALID_ARGUMENT, Code.ALREADY_EXISTS, Code.FAILED_PRECONDITION, Code.NOT_FOUND, Code.INTERNAL, Code.UNKNOWN]) {
    assert.equal(isRetryablePublishError(err(code, "SOMETHING")), false, Code[code]);
  }
});

test("FerryError decodes ErrorInfo, RetryInfo, BadRequest and AssignedEventIds from the trailer", () => {
  const e = FerryError.fromStatus(
    serviceError({ code: Code.DEADLINE_EXCEEDED, reason: "KAFKA_ACK_TIMEOUT", retryDelayMs: 1500, badField: "event.topic", assignedEventIds: ["a", "b"] }) as grpc.StatusObject,
  );
  assert.equal(e.code, Code.DEADLINE_EXCEEDED);
  assert.equal(e.codeName, "DEADLINE_EXCEEDED");
  assert.equal(e.reason, "KAFKA_ACK_TIMEOUT");
  assert.equal(e.domain, "ferry.v1");
  assert.equal(e.retryDelayMs, 1500);
  assert.deepEqual(e.fieldViolations.map((v) => v.field), ["event.topic"]);
  assert.deepEqual(e.assignedEventIds, ["a", "b"]);
  const bare = FerryError.fromStatus({ code: Code.RESOURCE_EXHAUSTED, details: "too big", metadata: new grpc.Metadata() });
  assert.equal(bare.reason, undefined);
});

test("UNAVAILABLE and CANCELLED are retried with the same UUIDv7 event id", async () => {
  const srv = await fakePublisher([{ code: Code.UNAVAILABLE, reason: "SHUTTING_DOWN" }, { code: Code.CANCELLED }, "ok"]);
  const client = new FerryClient({ address: srv.address, logger: quiet });
  try {
    const r = await client.publish("t", "p", { key: "k" });
    assert.equal(srv.requests.length, 3);
    const ids = new Set(srv.requests.map((q) => q.event?.eventId));
    assert.equal(ids.size, 1);
    assert.ok(isUuid(r.eventId) && uuidVersion(r.eventId) === 7, r.eventId);
    assert.deepEqual([...ids], [r.eventId]);
    assert.equal(srv.requests[0].event?.key?.toString(), "k");
  } finally {
    client.close();
    await srv.stop();
  }
});

test("RESOURCE_EXHAUSTED with ErrorInfo waits for the RetryInfo delay", async () => {
  const srv = await fakePublisher([{ code: Code.RESOURCE_EXHAUSTED, reason: "LOG_FULL", retryDelayMs: 700 }, "ok"]);
  const client = new FerryClient({ address: srv.address, logger: quiet });
  try {
    const started = Date.now();
    await client.publish("t", "p", { eventId: "given-id" });
    assert.ok(Date.now() - started >= 700, `waited ${Date.now() - started} ms`);
    assert.deepEqual(srv.requests.map((q) => q.event?.eventId), ["given-id", "given-id"]);
  } finally {
    client.close();
    await srv.stop();
  }
});

test("RESOURCE_EXHAUSTED without ErrorInfo is permanent", async () => {
  const srv = await fakePublisher([{ code: Code.RESOURCE_EXHAUSTED }, "ok"]);
  const client = new FerryClient({ address: srv.address, logger: quiet });
  try {
    await assert.rejects(client.publish("t", "p"), (e: unknown) => e instanceof FerryError && e.code === Code.RESOURCE_EXHAUSTED && e.reason === undefined);
    assert.equal(srv.requests.length, 1);
  } finally {
    client.close();
    await srv.stop();
  }
});

test("a request over the server's receive limit fails once, not retried", async () => {
  const srv = await fakePublisher(["ok"], { "grpc.max_receive_message_length": 1024 });
  const client = new FerryClient({ address: srv.address, logger: quiet });
  try {
    await assert.rejects(client.publish("t", "x".repeat(4096)), (e: unknown) => e instanceof FerryError && e.code === Code.RESOURCE_EXHAUSTED);
    assert.equal(srv.requests.length, 0);
  } finally {
    client.close();
    await srv.stop();
  }
});

test("INVALID_ARGUMENT, ALREADY_EXISTS, FAILED_PRECONDITION, NOT_FOUND are not retried", async () => {
  for (const [code, reason] of [
    [Code.INVALID_ARGUMENT, "FIELD_INVALID"],
    [Code.ALREADY_EXISTS, "EVENT_ID_CONFLICT"],
    [Code.FAILED_PRECONDITION, "X"],
    [Code.NOT_FOUND, "X"],
  ] as const) {
    const srv = await fakePublisher([{ code, reason, badField: "event.topic" }, "ok"]);
    const client = new FerryClient({ address: srv.address, logger: quiet });
    try {
      await assert.rejects(client.publish("t", "p"), (e: unknown) => e instanceof FerryError && e.code === code && e.reason === reason);
      assert.equal(srv.requests.length, 1, Code[code]);
    } finally {
      client.close();
      await srv.stop();
    }
  }
});

test("an attempt's DEADLINE_EXCEEDED is retried within the overall deadline", async () => {
  const srv = await fakePublisher(["hang", "ok"]);
  const client = new FerryClient({ address: srv.address, logger: quiet });
  try {
    const r = await client.publish("t", "p", { attemptTimeoutMs: 300 });
    assert.equal(srv.requests.length, 2);
    assert.equal(srv.requests[1].event?.eventId, r.eventId);
  } finally {
    client.close();
    await srv.stop();
  }
});

test("the overall deadline ends the retries with the last error", async () => {
  const srv = await fakePublisher([{ code: Code.UNAVAILABLE, reason: "SHUTTING_DOWN" }]);
  const client = new FerryClient({ address: srv.address, logger: quiet });
  try {
    const started = Date.now();
    // The last attempt's error: the server's, when the deadline fell in a wait between attempts;
    // DEADLINE_EXCEEDED, when it fell during an attempt (one started with little time left).
    const lastError = (e: unknown) =>
      e instanceof FerryError && (e.code === Code.UNAVAILABLE || e.code === Code.DEADLINE_EXCEEDED);
    await assert.rejects(client.publish("t", "p", { timeoutMs: 800 }), lastError);
    assert.ok(Date.now() - started < 2000);
    assert.ok(srv.requests.length >= 2);
  } finally {
    client.close();
    await srv.stop();
  }
});

test("the caller's abort cancels the call and is not retried", async () => {
  const srv = await fakePublisher(["hang"]);
  const client = new FerryClient({ address: srv.address, logger: quiet });
  try {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    await assert.rejects(client.publish("t", "p", { signal: ac.signal }), { name: "AbortError" });
    assert.equal(srv.requests.length, 1);
  } finally {
    client.close();
    await srv.stop();
  }
});

test("the repo's grpc_service_config.json loads as the channel's service config", async () => {
  const config = loadServiceConfig(new URL("../../../../proto/ferry/v1/grpc_service_config.json", import.meta.url).pathname);
  const srv = await fakePublisher([{ code: Code.INVALID_ARGUMENT, reason: "FIELD_INVALID" }, "ok"]);
  const client = new FerryClient({ address: srv.address, serviceConfig: config, logger: quiet });
  try {
    await assert.rejects(client.publish("t", "p"), (e: unknown) => e instanceof FerryError && e.code === Code.INVALID_ARGUMENT);
    const r = await client.publish("t", "p");
    assert.ok(r.eventId);
  } finally {
    client.close();
    await srv.stop();
  }
});
