// Credentials: what FERRY_TLS_* and FERRY_TOKEN_FILE give, token files, and where a token may go.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { isLocal, transport } from "../src/credentials.js";
import { type PublishRequest, PublisherService } from "../src/gen/ferry/v1/publisher.js";
import { credentialsFromEnv, FerryClient, readTokenFile } from "../src/index.js";

function tempFile(name: string, text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), "ferry-creds-")), name);
  writeFileSync(path, text);
  return path;
}

test("credentialsFromEnv reads the variables ferry status reads", () => {
  assert.deepEqual(credentialsFromEnv({}), {});
  assert.deepEqual(
    credentialsFromEnv({
      FERRY_TLS_CA: "/tls/ca.pem",
      FERRY_TLS_CLIENT_CERT: "/tls/client.pem",
      FERRY_TLS_CLIENT_KEY: "/tls/client.key",
      FERRY_TLS_SERVER_NAME: "ferry.local",
      FERRY_TOKEN_FILE: " /secrets/a , /secrets/b",
    }),
    {
      tls: { caFile: "/tls/ca.pem", certFile: "/tls/client.pem", keyFile: "/tls/client.key", serverName: "ferry.local" },
      tokenFile: "/secrets/a",
    },
  );
  // A client certificate alone does not turn TLS on: FERRY_TLS_CA does.
  assert.deepEqual(credentialsFromEnv({ FERRY_TLS_CLIENT_CERT: "/tls/client.pem" }), {});
});

test("readTokenFile takes the first token, past blank lines and comments", () => {
  assert.equal(readTokenFile(tempFile("token", "# the orders service\n\n  s3cret  \nother\n")), "s3cret");
  assert.throws(() => readTokenFile(tempFile("empty", "# nothing\n\n")), /holds no token/);
});

test("a token without TLS goes only to a loopback address or a unix socket", () => {
  for (const address of ["127.0.0.1:50051", "localhost:50051", "[::1]:50051", "unix:///run/ferry.sock", "dns:localhost:1"]) {
    assert.equal(isLocal(address), true, address);
    assert.equal(transport(address, { token: "t" }).interceptors.length, 1, address);
  }
  for (const address of ["ferry:50051", "10.0.0.7:50051", "[2001:db8::1]:50051", "128.0.0.1:1"]) {
    assert.equal(isLocal(address), false, address);
    assert.throws(() => transport(address, { token: "t" }), /not to/, address);
  }
  assert.equal(transport("ferry:50051", {}).interceptors.length, 0, "plaintext without a token is the caller's choice");
});

test("TLS settings that cannot work are refused when the client is created", () => {
  assert.throws(() => new FerryClient({ address: "ferry:1", credentials: { tls: { certFile: "/c.pem" } } }), /both certFile and keyFile/);
  assert.throws(() => new FerryClient({ address: "ferry:1", credentials: { tls: { caFile: "/no/such/ca.pem" } } }), /TLS CA file/);
  assert.throws(() => new FerryClient({ credentials: { tokenFile: "/no/such/token" } }), /ENOENT/);
});

test("the token goes with every call as a bearer authorization header", async () => {
  const seen: string[] = [];
  const server = new grpc.Server();
  server.addService(PublisherService, {
    publish(call: grpc.ServerUnaryCall<PublishRequest, unknown>, callback: grpc.sendUnaryData<unknown>) {
      seen.push(String(call.metadata.get("authorization")[0] ?? ""));
      callback(null, { result: { eventId: call.request.event?.eventId ?? "", sequence: 1, duplicate: false, publishTime: new Date() } });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const client = new FerryClient({ address: `127.0.0.1:${port}`, credentials: { tokenFile: tempFile("token", "tok-1\n") } });
  try {
    await client.publish("orders", "a");
    await client.publish("orders", "b");
  } finally {
    client.close();
    server.forceShutdown();
  }
  assert.deepEqual(seen, ["Bearer tok-1", "Bearer tok-1"]);
});
