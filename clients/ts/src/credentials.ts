import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";

/**
 * How the client reaches a Ferry that serves TLS (--tls-cert, --tls-key) and, with
 * --tls-client-ca, requires a client certificate (mutual TLS). Files are PEM, read when the
 * client is created.
 */
export interface TlsOptions {
  /** CA certificates Ferry's certificate must chain to; unset: Node's default CAs. */
  caFile?: string;
  /** The client certificate and its private key, for mutual TLS: both or neither. */
  certFile?: string;
  keyFile?: string;
  /** The name Ferry's certificate must hold; unset: the address's host. */
  serverName?: string;
}

/** TLS and a bearer token, for a Ferry started with TLS options and --token-file or FERRY_TOKENS. */
export interface Credentials {
  /** Connect over TLS instead of plaintext. */
  tls?: TlsOptions;
  /**
   * Sent as "authorization: Bearer <token>" with every call. Without `tls` the client connects
   * only to a loopback address or a unix socket: a token sent in the clear elsewhere could be
   * read off the wire, so the client refuses to be created.
   */
  token?: string;
  /** `token` read from a file in Ferry's token file format: its first token. */
  tokenFile?: string;
}

/**
 * The credentials the variables `ferry status` reads describe, for a client inside a pod:
 * FERRY_TLS_CA (turns TLS on), FERRY_TLS_SERVER_NAME, FERRY_TLS_CLIENT_CERT and
 * FERRY_TLS_CLIENT_KEY (mutual TLS), FERRY_TOKEN_FILE (the first token of the first file listed).
 * Unset variables: plaintext and no token.
 */
export function credentialsFromEnv(env: NodeJS.ProcessEnv = process.env): Credentials {
  const credentials: Credentials = {};
  if (env.FERRY_TLS_CA) {
    credentials.tls = {
      caFile: env.FERRY_TLS_CA,
      certFile: env.FERRY_TLS_CLIENT_CERT || undefined,
      keyFile: env.FERRY_TLS_CLIENT_KEY || undefined,
      serverName: env.FERRY_TLS_SERVER_NAME || undefined,
    };
  }
  if (env.FERRY_TOKEN_FILE) credentials.tokenFile = env.FERRY_TOKEN_FILE.split(",")[0].trim();
  return credentials;
}

/** The first token of a file in Ferry's token file format (one a line; blank lines and # comments skipped). */
export function readTokenFile(path: string): string {
  const token = readFileSync(path, "utf8")
    .split("\n")
    .map((line) => line.trim())
    .find((line) => line !== "" && !line.startsWith("#"));
  if (token === undefined) throw new Error(`ferry: token file ${path} holds no token`);
  return token;
}

/** What the generated clients are built with for `credentials`. */
export interface Transport {
  credentials: grpc.ChannelCredentials;
  options: grpc.ChannelOptions;
  interceptors: grpc.Interceptor[];
}

/** The channel credentials, options and interceptors that reach `address` as `credentials` say; throws on a setting that cannot work. */
export function transport(address: string, credentials: Credentials = {}): Transport {
  const token = credentials.tokenFile ? readTokenFile(credentials.tokenFile) : credentials.token;
  const interceptors = token ? [bearer(token)] : [];
  const tls = credentials.tls;
  if (tls === undefined) {
    if (token && !isLocal(address)) {
      throw new Error(
        `ferry: a token without TLS is sent only to a loopback address or a unix socket, not to ${address}; set tls`,
      );
    }
    return { credentials: grpc.credentials.createInsecure(), options: {}, interceptors };
  }
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new Error("ferry: TLS needs both certFile and keyFile, or neither");
  }
  const read = (what: string, path: string | undefined): Buffer | null => {
    if (path === undefined) return null;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`ferry: TLS ${what}: ${String(err)}`);
    }
  };
  const channel = grpc.credentials.createSsl(
    read("CA file", tls.caFile),
    read("client key", tls.keyFile),
    read("client certificate", tls.certFile),
  );
  const options: grpc.ChannelOptions = {};
  if (tls.serverName) {
    options["grpc.ssl_target_name_override"] = tls.serverName;
    options["grpc.default_authority"] = tls.serverName;
  }
  return { credentials: channel, options, interceptors };
}

/** Adds "authorization: Bearer <token>" to every call's metadata. */
function bearer(token: string): grpc.Interceptor {
  const header = `Bearer ${token}`;
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", header);
        next(metadata, listener);
      },
    });
}

/** A unix socket, or a loopback host (127.0.0.0/8, ::1, localhost). */
export function isLocal(address: string): boolean {
  if (address.startsWith("unix:")) return true;
  const target = address.replace(/^(dns|ipv4|ipv6):(\/\/[^/]*\/)?/, "");
  const host = target.startsWith("[") ? target.slice(1, target.indexOf("]")) : target.split(":")[0];
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
