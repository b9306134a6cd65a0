/** Capped exponential backoff with jitter: each delay is drawn from [cap/2, cap]. */
export class Backoff {
  private attempt = 0;

  constructor(
    readonly initialMs = 100,
    readonly maxMs = 5000,
    readonly multiplier = 2,
  ) {}

  next(): number {
    const cap = Math.min(this.maxMs, this.initialMs * this.multiplier ** this.attempt);
    this.attempt++;
    return cap / 2 + Math.random() * (cap / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
