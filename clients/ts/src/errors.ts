import { Metadata, status, type StatusObject } from "@grpc/grpc-js";
import { AssignedEventIds } from "./gen/ferry/v1/publisher.js";
import { Status } from "./gen/google/rpc/status.js";
import { BadRequest, ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details.js";
import type { Duration } from "./gen/google/protobuf/duration.js";
import type { Failure } from "./gen/ferry/v1/record.js";

export { status as Code };

/** One field a google.rpc.BadRequest names as malformed. */
export interface FieldViolation {
  field: string;
  description: string;
}

/**
 * A failed Ferry call: the gRPC status code plus the details Ferry packs into
 * the `grpc-status-details-bin` trailer (google.rpc.ErrorInfo, RetryInfo,
 * BadRequest, ferry.v1.AssignedEventIds). Branch on `code` and `reason`.
 */
export class FerryError extends Error {
  override name = "FerryError";
  /** The gRPC status code (see `Code`). */
  readonly code: status;
  /** The ErrorInfo reason (e.g. "LOG_FULL"); undefined when the error carried no ErrorInfo. */
  readonly reason?: string;
  /** The ErrorInfo domain ("ferry.v1" for Ferry's own errors). */
  readonly domain?: string;
  /** The ErrorInfo metadata. */
  readonly errorMetadata: Record<string, string>;
  /** The google.rpc.RetryInfo delay in milliseconds, when the server gave one. */
  readonly retryDelayMs?: number;
  /** The google.rpc.BadRequest field violations. */
  readonly fieldViolations: FieldViolation[];
  /** ferry.v1.AssignedEventIds of a DEADLINE_EXCEEDED publish: publish again with these ids. */
  readonly assignedEventIds?: string[];
  /** The server's message, without the code prefix. */
  readonly details: string;

  constructor(
    code: status,
    details: string,
    extra: {
      errorInfo?: ErrorInfo;
      retryDelayMs?: number;
      fieldViolations?: FieldViolation[];
      assignedEventIds?: string[];
      cause?: unknown;
    } = {},
  ) {
    const reason = extra.errorInfo?.reason || undefined;
    super(`${status[code] ?? code}${reason ? ` (${reason})` : ""}: ${details}`, { cause: extra.cause });
    this.code = code;
    this.details = details;
    this.reason = reason;
    this.domain = extra.errorInfo?.domain || undefined;
    this.errorMetadata = extra.errorInfo?.metadata ?? {};
    this.retryDelayMs = extra.retryDelayMs;
    this.fieldViolations = extra.fieldViolations ?? [];
    this.assignedEventIds = extra.assignedEventIds;
  }

  /** The code's name, e.g. "UNAVAILABLE". */
  get codeName(): string {
    return status[this.code] ?? String(this.code);
  }

  /** Builds a FerryError from a gRPC status (a ServiceError or a stream's final status). */
  static fromStatus(s: Partial<StatusObject> & { code: status }, cause?: unknown): FerryError {
    const extra: ConstructorParameters<typeof FerryError>[2] = { cause };
    const raw = s.metadata instanceof Metadata ? s.metadata.get("grpc-status-details-bin")[0] : undefined;
    if (raw instanceof Buffer) {
      try {
        for (const any of Status.decode(raw).details) {
          const type = any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1);
          if (type === "google.rpc.ErrorInfo") extra.errorInfo = ErrorInfo.decode(any.value);
          else if (type === "google.rpc.RetryInfo") extra.retryDelayMs = durationMs(RetryInfo.decode(any.value).retryDelay);
          else if (type === "google.rpc.BadRequest") extra.fieldViolations = BadRequest.decode(any.value).fieldViolations;
          else if (type === "ferry.v1.AssignedEventIds") extra.assignedEventIds = AssignedEventIds.decode(any.value).eventIds;
        }
      } catch {
        // Undecodable details leave the bare code and message, which still classify.
      }
    }
    return new FerryError(s.code, s.details ?? "", extra);
  }

  /**
   * Builds a FerryError from a ferry.v1.Failure: one event's refusal in a batch, or one
   * PublishStream request's (then with the response's assigned_event_ids).
   */
  static fromFailure(f: Failure, assignedEventIds?: string[]): FerryError {
    return new FerryError(f.code, f.message, {
      errorInfo: f.reason ? { reason: f.reason, domain: "ferry.v1", metadata: {} } : undefined,
      retryDelayMs: durationMs(f.retryDelay),
      fieldViolations: f.field ? [{ field: f.field, description: f.message }] : [],
      assignedEventIds: assignedEventIds?.length ? assignedEventIds : undefined,
    });
  }
}

export function durationMs(d: Duration | undefined): number | undefined {
  return d === undefined ? undefined : d.seconds * 1000 + Math.floor(d.nanos / 1e6);
}

export function msToDuration(ms: number): Duration {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

/**
 * Whether a failed publish attempt may be sent again with the same event ids.
 * `callerCancelled` tells a CANCELLED the caller asked for (never retried) from
 * one the server's shutdown produced (retried).
 */
export function isRetryablePublishError(err: FerryError, callerCancelled = false): boolean {
  switch (err.code) {
    case status.UNAVAILABLE:
    case status.DEADLINE_EXCEEDED:
      return true;
    case status.CANCELLED:
      return !callerCancelled;
    case status.RESOURCE_EXHAUSTED:
      // Without ErrorInfo the transport refused an oversized request: it can never succeed.
      return err.reason !== undefined;
    default:
      return false;
  }
}

/** Codes that end a subscriber loop instead of reconnecting: the request itself is wrong. */
export function isFatalSubscribeError(err: FerryError): boolean {
  return err.code === status.INVALID_ARGUMENT || err.code === status.FAILED_PRECONDITION;
}
