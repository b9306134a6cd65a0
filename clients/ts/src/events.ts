// Events as the caller gives them, turned into ferry.v1 messages, and batch answers turned into outcomes.
import { status } from "@grpc/grpc-js";
import { v7 as uuidv7 } from "uuid";
import { FerryError } from "./errors.js";
import type { Event, PublishBatchEntry, PublishResult } from "./gen/ferry/v1/publisher.js";
import type { Header } from "./gen/ferry/v1/record.js";

/** Bytes as the caller has them: a string is sent as UTF-8. */
export type Bytes = string | Uint8Array;
/** Ordered headers (a key may repeat), or a plain object; a null value is a null header value. */
export type HeadersInput = ReadonlyArray<readonly [string, Bytes | null]> | Readonly<Record<string, Bytes | null>>;

export interface EventInput {
  topic: string;
  /** null or undefined: a null value (a tombstone). */
  payload?: Bytes | null;
  /** null or undefined: a null key. */
  key?: Bytes | null;
  headers?: HeadersInput;
  /** The idempotency key; default a fresh UUIDv7, kept across retries. */
  eventId?: string;
}

/** One event's outcome in a batch: a result, or the error that refused that event alone. */
export interface BatchOutcome {
  eventId: string;
  result?: PublishResult;
  error?: FerryError;
}

function toBuffer(b: Bytes | null | undefined): Buffer | undefined {
  if (b === null || b === undefined) return undefined;
  return typeof b === "string" ? Buffer.from(b, "utf8") : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function toHeaders(h: HeadersInput | undefined): Header[] {
  if (h === undefined) return [];
  const pairs = Array.isArray(h) ? (h as ReadonlyArray<readonly [string, Bytes | null]>) : Object.entries(h);
  return pairs.map(([key, value]) => ({ key, value: toBuffer(value) }));
}

/** The event to send; its id is fixed here, once, so every retry and resend carries the same one. */
export function toEvent(e: EventInput): Event {
  return {
    topic: e.topic,
    key: toBuffer(e.key),
    payload: toBuffer(e.payload),
    headers: toHeaders(e.headers),
    eventId: e.eventId || uuidv7(),
  };
}

/** One outcome per sent event, in order, from the entries of a PublishBatch or PublishStream answer. */
export function batchOutcomes(events: Event[], entries: PublishBatchEntry[]): BatchOutcome[] {
  return events.map((event, i) => {
    const outcome = entries[i]?.outcome;
    if (outcome?.$case === "result") return { eventId: outcome.value.eventId, result: outcome.value };
    const f = outcome?.value ?? { code: status.INTERNAL, message: "no entry for this event", reason: "", field: "" };
    return { eventId: event.eventId, error: FerryError.fromFailure(f) };
  });
}
