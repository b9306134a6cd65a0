// The subscriber loop against an in-process fake Subscriber.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, FerryClient, FerryError, type Logger } from "../src/index.js";
import type { Delivery, SubscribeResponse } from "../src/gen/ferry/v1/subscriber.js";
import { fakeSubscriber } from "./fake.js";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function deliveries(stream: number, ...ids: string[]): SubscribeResponse {
  const ds: Delivery[] = ids.map((id, i) => ({
    ackId: `${stream}:${id}`,
    event: { eventId: id, topic: "t", headers: [], publishedByFerry: true, kafkaTimeType: 1 },
    partition: 0,
    offset: i,
    deliveryAttempt: stream,
  }));
  return { response: { $case: "deliveries", value: { deliveries: ds } } };
}

const opened = (leaseSeconds = 30): SubscribeResponse => ({
  response: { $case: "opened", value: { subscription: "s", leaseDuration: { seconds: leaseSeconds, nanos: 0 } } },
});

function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => (cond() ? resolve() : Date.now() - started > timeoutMs ? reject(new Error("timed out")) : setTimeout(tick, 10));
    tick();
  });
}

test("acks successes, nacks failures, extends slow handlers' leases, reconnects after UNAVAILABLE, stops cleanly", async () => {
  const srv = await fakeSubscriber([
    (s) => {
      s.send(opened());
      setTimeout(() => s.fail({ code: Code.UNAVAILABLE, reason: "SHUTTING_DOWN" }), 50);
    },
    (s) => {
      s.send(opened(1));
      s.send(deliveries(s.n, "good", "bad", "slow"));
    },
  ]);
  const client = new FerryClient({ address: srv.address, logger: quiet });
  const ac = new AbortController();
  const handled: string[] = [];
  const loop = client.subscribe({ subscription: "s", topics: ["t"], signal: ac.signal, nackDelayMs: 250 }, async (d) => {
    const id = d.event!.eventId;
    if (id === "bad") throw new Error("boom");
    if (id === "slow") await new Promise((r) => setTimeout(r, 1300));
    handled.push(id);
  });
  try {
    await until(() => handled.includes("slow"));
    ac.abort();
    await loop;
    const second = srv.requests.filter((r) => r.stream === 2).map((r) => r.request.request!);
    assert.equal(second[0].$case, "open");
    assert.deepEqual(second[0].value, { ...second[0].value, subscription: "s", topics: ["t"] });
    const ids = (kind: string) => second.filter((r) => r.$case === kind).flatMap((r) => (r.$case === "open" ? [] : r.value.ackIds));
    assert.deepEqual(ids("ack").sort(), ["2:good", "2:slow"]);
    assert.deepEqual(ids("nack"), ["2:bad"]);
    const nack = second.find((r) => r.$case === "nack");
    assert.deepEqual(nack?.$case === "nack" && nack.value.redeliveryDelay, { seconds: 0, nanos: 250e6 });
    assert.ok(ids("extend").includes("2:slow"), "the slow handler's lease was extended");
    // The ack of the slow delivery went out after the stop was asked for, before the stream closed.
    assert.equal(second.at(-1)?.$case, "ack");
  } finally {
    ac.abort();
    client.close();
    await srv.stop();
  }
});

test("FAILED_PRECONDITION ends the loop with a FerryError", async () => {
  const srv = await fakeSubscriber([(s) => s.fail({ code: Code.FAILED_PRECONDITION, reason: "SUBSCRIPTION_SETTINGS_CONFLICT" })]);
  const client = new FerryClient({ address: srv.address, logger: quiet });
  try {
    await assert.rejects(
      client.subscribe({ subscription: "s", topics: ["t"] }, () => {}),
      (e: unknown) => e instanceof FerryError && e.code === Code.FAILED_PRECONDITION && e.reason === "SUBSCRIPTION_SETTINGS_CONFLICT",
    );
  } finally {
    client.close();
    await srv.stop();
  }
});

test("a handler error never ends the loop, and concurrency is bounded", async () => {
  const ids = Array.from({ length: 40 }, (_, i) => `e${i}`);
  const srv = await fakeSubscriber([(s) => (s.send(opened()), s.send(deliveries(1, ...ids)))]);
  const client = new FerryClient({ address: srv.address, logger: quiet });
  const ac = new AbortController();
  let running = 0;
  let peak = 0;
  let done = 0;
  const loop = client.subscribe({ subscription: "s", topics: ["t"], signal: ac.signal, concurrency: 4 }, async (d) => {
    peak = Math.max(peak, ++running);
    await new Promise((r) => setTimeout(r, 5));
    running--;
    done++;
    if (d.event!.eventId.endsWith("3")) throw new Error("odd one out");
  });
  try {
    await until(() => done === ids.length);
    ac.abort();
    await loop;
    assert.equal(peak, 4);
    const acked = srv.requests.flatMap((r) => (r.request.request?.$case === "ack" ? r.request.request.value.ackIds : []));
    assert.equal(acked.length, 36);
  } finally {
    client.close();
    await srv.stop();
  }
});
