// Subscribes SUBSCRIPTION to TOPIC from the earliest record, acks every delivery, and prints
// {"received": EXPECT} once EXPECT distinct event ids were handled; exits 1 after TIMEOUT_S
// seconds without that. Reconnects on its own while Ferry restarts. Logs go to stderr.
import { credentialsFromEnv, FerryClient, StartPosition } from "../src/index.js";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const topic = env("TOPIC");
const subscription = env("SUBSCRIPTION");
const expect = Number(env("EXPECT"));
const timeoutS = Number(env("TIMEOUT_S"));

// FERRY_ADDR; TLS and a token from FERRY_TLS_* and FERRY_TOKEN_FILE when set.
const client = new FerryClient({ credentials: credentialsFromEnv() });
const stop = new AbortController();
const seen = new Set<string>();
const timer = setTimeout(() => stop.abort(new Error(`timed out after ${timeoutS} s`)), timeoutS * 1000);

try {
  await client.subscribe(
    { subscription, topics: [topic], startPosition: StartPosition.START_POSITION_EARLIEST, signal: stop.signal },
    (delivery) => {
      seen.add(delivery.event?.eventId ?? "");
      if (seen.size >= expect) stop.abort(); // this delivery is still acked before the loop ends
    },
  );
} catch (err) {
  console.error(`subscriber: ${String(err)}`);
} finally {
  clearTimeout(timer);
  client.close();
}
if (seen.size >= expect) {
  process.stdout.write(`${JSON.stringify({ received: expect })}\n`);
} else {
  console.error(`subscriber: received ${seen.size} of ${expect} distinct events`);
  process.exitCode = 1;
}
