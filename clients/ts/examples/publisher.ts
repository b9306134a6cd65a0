// Publishes COUNT events to TOPIC one call at a time (ids ${ID_PREFIX}-${i}, keys k${i % 8},
// payloads payload-${i}), riding out Ferry restarts through the client's retries, then prints
// {"published": COUNT}. Exits 1 on an error that is not retried. Logs go to stderr.
import { FerryClient, FerryError } from "../src/index.js";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const topic = env("TOPIC");
const count = Number(env("COUNT"));
const idPrefix = env("ID_PREFIX");
const client = new FerryClient(); // FERRY_ADDR

try {
  for (let i = 0; i < count; i++) {
    await client.publish(topic, `payload-${i}`, { key: `k${i % 8}`, eventId: `${idPrefix}-${i}` });
  }
  process.stdout.write(`${JSON.stringify({ published: count })}\n`);
} catch (err) {
  const what = err instanceof FerryError ? `${err.codeName} ${err.reason ?? ""}: ${err.details}` : String(err);
  console.error(`publisher: giving up: ${what}`);
  process.exitCode = 1;
} finally {
  client.close();
}
