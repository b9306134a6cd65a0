// Publishes COUNT events to TOPIC (ids ${ID_PREFIX}-${i}, keys k${i % 8}, payloads payload-${i}),
// riding out Ferry restarts through the client's retries, then prints {"published": COUNT}.
// PUBLISH_MODE=unary (the default) publishes one call at a time; PUBLISH_MODE=stream pipelines
// them over one PublishStream with the stream publisher and waits for every answer.
// Exits 1 on an error that is not retried. Logs go to stderr.
import { credentialsFromEnv, FerryClient, FerryError, type PublishResult } from "../src/index.js";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const topic = env("TOPIC");
const count = Number(env("COUNT"));
const idPrefix = env("ID_PREFIX");
const mode = process.env.PUBLISH_MODE || "unary";
if (mode !== "unary" && mode !== "stream") throw new Error(`PUBLISH_MODE must be unary or stream, not ${mode}`);
// FERRY_ADDR; TLS and a token from FERRY_TLS_* and FERRY_TOKEN_FILE when set.
const client = new FerryClient({ credentials: credentialsFromEnv() });

async function unary(): Promise<void> {
  for (let i = 0; i < count; i++) {
    await client.publish(topic, `payload-${i}`, { key: `k${i % 8}`, eventId: `${idPrefix}-${i}` });
  }
}

async function stream(): Promise<void> {
  const publisher = client.streamPublisher();
  try {
    const results: Array<Promise<PublishResult>> = [];
    for (let i = 0; i < count; i++) {
      // Resolves once the window has room; the answer comes in `result`.
      const handle = await publisher.publish(topic, `payload-${i}`, { key: `k${i % 8}`, eventId: `${idPrefix}-${i}` });
      results.push(handle.result);
    }
    await Promise.all(results);
  } finally {
    await publisher.close();
  }
}

try {
  await (mode === "stream" ? stream() : unary());
  process.stdout.write(`${JSON.stringify({ published: count })}\n`);
} catch (err) {
  const what = err instanceof FerryError ? `${err.codeName} ${err.reason ?? ""}: ${err.details}` : String(err);
  console.error(`publisher: giving up: ${what}`);
  process.exitCode = 1;
} finally {
  client.close();
}
