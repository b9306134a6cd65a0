// End to end against a running Ferry and its Kafka: publish 100 keyed events, consume them with
// the subscriber loop (one fails once and must come back as delivery attempt 2), then read the
// topic with a plain Kafka client and check every event is there in per-key order.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import kafkajs from "kafkajs";
import { AckLevel, FerryClient, StartPosition } from "../src/index.js";
import { registerLz4 } from "./lz4.js";

const { FERRY_ADDR, KAFKA_BOOTSTRAP } = process.env;
const skip = FERRY_ADDR && KAFKA_BOOTSTRAP ? false : "FERRY_ADDR and KAFKA_BOOTSTRAP are unset: no Ferry to test against";
const N = 100;

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

interface KafkaRecord {
  eventId: string;
  key: string;
  n: string;
  value: string;
}

/** Reads the topic with kafkajs from the beginning until `expect` distinct event ids were seen. */
async function readTopic(topic: string, expect: number, run: string): Promise<KafkaRecord[]> {
  registerLz4();
  const kafka = new kafkajs.Kafka({ clientId: "ferry-ts-e2e", brokers: [KAFKA_BOOTSTRAP!], logLevel: kafkajs.logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `ts-e2e-reader-${run}-${topic}` });
  const records: KafkaRecord[] = [];
  const seen = new Set<string>();
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await within(
      new Promise<void>((resolve) => {
        void consumer.run({
          // One partition's messages come in offset order, so per key in Kafka's order.
          eachMessage: async ({ message }) => {
            const eventId = message.headers?.["ferry-event-id"]?.toString() ?? "";
            const n = message.headers?.n?.toString() ?? "";
            records.push({ eventId, key: message.key?.toString() ?? "", n, value: message.value?.toString() ?? "" });
            seen.add(eventId);
            if (seen.size === expect) resolve();
          },
        });
      }),
      60_000,
      "reading Kafka",
    );
  } finally {
    await consumer.disconnect();
  }
  return records;
}

/** Every event 0..n-1 is in Kafka with its key and payload, and each key's events are in publish order. */
function checkInKafka(records: KafkaRecord[], n: number, id: (i: number) => string): void {
  const byKey = new Map<string, number[]>();
  const first = new Set<string>();
  for (const r of records) {
    const i = Number(r.n);
    assert.equal(r.eventId, id(i));
    assert.equal(r.value, `payload-${i}`);
    assert.equal(r.key, `k${i % 8}`);
    if (first.has(r.eventId)) continue; // a resend's duplicate comes after the first copy
    first.add(r.eventId);
    byKey.set(r.key, [...(byKey.get(r.key) ?? []), i]);
  }
  assert.equal(first.size, n);
  assert.equal(byKey.size, 8);
  for (const [key, order] of byKey) {
    const expected = Array.from({ length: n }, (_, i) => i).filter((i) => `k${i % 8}` === key);
    assert.deepEqual(order, expected, `order of key ${key} in Kafka`);
  }
}

test("publish 100, subscribe with one redelivery, read all 100 from Kafka in per-key order", { skip, timeout: 180_000 }, async () => {
  const run = randomBytes(4).toString("hex");
  const topic = `ts-e2e-${run}`;
  const id = (i: number) => `ts-e2e-${run}-${i}`;
  const client = new FerryClient({ address: FERRY_ADDR });
  try {
    // Publish, one call at a time so per-key order is the publish order; the last one waits for Kafka.
    for (let i = 0; i < N; i++) {
      const last = i === N - 1;
      const r = await client.publish(topic, `payload-${i}`, {
        key: `k${i % 8}`,
        eventId: id(i),
        headers: [["n", String(i)]],
        ackLevel: last ? AckLevel.ACK_LEVEL_KAFKA : undefined,
      });
      assert.equal(r.eventId, id(i));
      assert.equal(r.duplicate, false);
      assert.ok(r.sequence > 0 && r.publishTime instanceof Date);
      if (last) assert.ok(r.kafkaPosition && r.kafkaPosition.offset >= 0, "ACK_LEVEL_KAFKA answers with the Kafka position");
    }
    const again = await client.publish(topic, "payload-0", { key: "k0", eventId: id(0), headers: [["n", "0"]] });
    assert.equal(again.duplicate, true, "the same event id again is a duplicate");

    // Subscribe: fail event 37 once, ack everything else.
    const failing = id(37);
    const attempts = new Map<string, number[]>();
    const acked = new Set<string>();
    const stop = new AbortController();
    let allAcked!: () => void;
    const done = new Promise<void>((resolve) => (allAcked = resolve));
    const loop = client.subscribe(
      { subscription: `ts-e2e-${run}`, topics: [topic], startPosition: StartPosition.START_POSITION_EARLIEST, nackDelayMs: 100, signal: stop.signal },
      (d) => {
        const eventId = d.event!.eventId;
        attempts.set(eventId, [...(attempts.get(eventId) ?? []), d.deliveryAttempt]);
        if (eventId === failing && d.deliveryAttempt === 1) throw new Error("failing this one once, on purpose");
        acked.add(eventId);
        if (acked.size === N) allAcked();
      },
    );
    await within(Promise.race([done, loop]), 60_000, "subscribing");
    stop.abort();
    await loop;
    assert.equal(acked.size, N);
    assert.deepEqual(attempts.get(failing), [1, 2]);
    for (let i = 0; i < N; i++) assert.ok(acked.has(id(i)), id(i));

    // Read the topic with kafkajs.
    checkInKafka(await readTopic(topic, N, run), N, id);
  } finally {
    client.close();
  }
});

test("the stream publisher: 400 keyed events pipelined over one stream, all in Kafka in per-key order", { skip, timeout: 180_000 }, async () => {
  const run = randomBytes(4).toString("hex");
  const topic = `ts-e2e-stream-${run}`;
  const id = (i: number) => `ts-e2e-stream-${run}-${i}`;
  const count = 400;
  const client = new FerryClient({ address: FERRY_ADDR });
  const stream = client.streamPublisher({ maxUnanswered: 64 });
  try {
    const handles = [];
    for (let i = 0; i < count; i++) {
      handles.push(await stream.publish(topic, `payload-${i}`, { key: `k${i % 8}`, eventId: id(i), headers: [["n", String(i)]] }));
    }
    const last = await stream.publishBatch([{ topic, payload: "payload-0", key: "k0", eventId: id(0), headers: [["n", "0"]] }], {
      ackLevel: AckLevel.ACK_LEVEL_KAFKA,
    });
    const results = await Promise.all(handles.map((h) => h.result));
    results.forEach((r, i) => {
      assert.equal(r.eventId, id(i));
      assert.equal(r.duplicate, false);
      assert.ok(r.sequence > 0);
    });
    const sequences = results.map((r) => r.sequence);
    assert.deepEqual(sequences, [...sequences].sort((a, b) => a - b), "one stream's requests are logged in send order");
    const [again] = await last.result;
    assert.equal(again.result?.duplicate, true, "the same event id again is a duplicate");
    await stream.close();
    checkInKafka(await readTopic(topic, count, run), count, id);
  } finally {
    await stream.close();
    client.close();
  }
});
