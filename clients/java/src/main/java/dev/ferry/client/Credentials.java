package dev.ferry.client;

import io.grpc.CallCredentials;
import io.grpc.ChannelCredentials;
import io.grpc.CompositeChannelCredentials;
import io.grpc.InsecureChannelCredentials;
import io.grpc.Metadata;
import io.grpc.SecurityLevel;
import io.grpc.Status;
import io.grpc.TlsChannelCredentials;
import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.Executor;
import java.util.regex.Pattern;

/**
 * TLS and a bearer token, for a Ferry started with {@code --tls-cert}/{@code --tls-key} (TLS),
 * {@code --tls-client-ca} (mutual TLS) or {@code --token-file}/{@code FERRY_TOKENS}.
 *
 * <p>The token goes as {@code authorization: Bearer <token>} with every call. Without TLS the
 * client is built only for a loopback address or a unix socket, so a token never crosses a
 * network in clear text; over TLS it goes only on connections with privacy and integrity.
 *
 * @param tls how to reach a Ferry that serves TLS; null: plaintext
 * @param token the bearer token; null: none
 */
public record Credentials(Tls tls, String token) {
  /** Plaintext, no token. */
  public static final Credentials NONE = new Credentials(null, null);

  private static final Pattern LOOPBACK_V4 = Pattern.compile("127\\.\\d+\\.\\d+\\.\\d+");

  /**
   * TLS settings; files are PEM, read when the client is built.
   *
   * @param caFile CA certificates Ferry's certificate must chain to; null: the JVM's default CAs
   * @param certFile client certificate for mutual TLS (with keyFile, a PKCS#8 key); null: none
   * @param keyFile its private key; both or neither
   * @param serverName the name Ferry's certificate must hold; null: the address's host
   */
  public record Tls(String caFile, String certFile, String keyFile, String serverName) {}

  /**
   * What the variables {@code ferry status} reads describe, for a client inside a pod: {@code
   * FERRY_TLS_CA} (turns TLS on), {@code FERRY_TLS_SERVER_NAME}, {@code FERRY_TLS_CLIENT_CERT}
   * and {@code FERRY_TLS_CLIENT_KEY} (mutual TLS), {@code FERRY_TOKEN_FILE} (the first token of
   * the first file listed). Unset variables: plaintext, no token.
   *
   * @throws UncheckedIOException when the token file cannot be read
   */
  public static Credentials fromEnv() {
    return fromEnv(System.getenv());
  }

  static Credentials fromEnv(Map<String, String> env) {
    Tls tls = null;
    String ca = blankToNull(env.get("FERRY_TLS_CA"));
    if (ca != null) {
      tls =
          new Tls(
              ca,
              blankToNull(env.get("FERRY_TLS_CLIENT_CERT")),
              blankToNull(env.get("FERRY_TLS_CLIENT_KEY")),
              blankToNull(env.get("FERRY_TLS_SERVER_NAME")));
    }
    String token = null;
    String files = blankToNull(env.get("FERRY_TOKEN_FILE"));
    if (files != null) {
      token = readTokenFile(Path.of(files.split(",")[0].trim()));
    }
    return new Credentials(tls, token);
  }

  /**
   * The first token of a file in Ferry's token file format: one a line, blank lines and lines
   * starting with # skipped.
   */
  public static String readTokenFile(Path path) {
    try {
      for (String line : Files.readAllLines(path)) {
        String token = line.strip();
        if (!token.isEmpty() && !token.startsWith("#")) {
          return token;
        }
      }
    } catch (IOException e) {
      throw new UncheckedIOException("ferry: token file " + path, e);
    }
    throw new IllegalArgumentException("ferry: token file " + path + " holds no token");
  }

  /** The gRPC channel credentials for {@code target}; refuses a setting that cannot work. */
  ChannelCredentials channelCredentials(String target) {
    ChannelCredentials transport;
    if (tls == null) {
      if (token != null && !isLocal(target)) {
        throw new IllegalArgumentException(
            "ferry: a token without TLS is sent only to a loopback address or a unix socket, not"
                + " to "
                + target
                + "; give Credentials a Tls");
      }
      transport = InsecureChannelCredentials.create();
    } else {
      transport = tlsCredentials(tls);
    }
    if (token == null) {
      return transport;
    }
    return CompositeChannelCredentials.create(transport, new BearerToken(token, tls != null));
  }

  private static ChannelCredentials tlsCredentials(Tls tls) {
    if ((tls.certFile() == null) != (tls.keyFile() == null)) {
      throw new IllegalArgumentException("ferry: TLS needs both certFile and keyFile, or neither");
    }
    TlsChannelCredentials.Builder b = TlsChannelCredentials.newBuilder();
    try {
      if (tls.caFile() != null) {
        b.trustManager(new File(tls.caFile()));
      }
      if (tls.certFile() != null) {
        b.keyManager(new File(tls.certFile()), new File(tls.keyFile()));
      }
    } catch (IOException e) {
      throw new UncheckedIOException("ferry: TLS files", e);
    }
    return b.build();
  }

  /** A unix socket, or a loopback host (127.0.0.0/8, ::1, localhost). */
  static boolean isLocal(String target) {
    if (target.startsWith("unix:")) {
      return true;
    }
    String rest = target.replaceFirst("^(dns|ipv4|ipv6):(//[^/]*/)?", "");
    String host =
        rest.startsWith("[")
            ? rest.substring(1, Math.max(1, rest.indexOf(']')))
            : rest.split(":", 2)[0];
    return host.equals("localhost") || host.equals("::1") || LOOPBACK_V4.matcher(host).matches();
  }

  private static String blankToNull(String s) {
    return s == null || s.isBlank() ? null : s.trim();
  }

  /** Keeps the token out of anything that prints the credentials. */
  @Override
  public String toString() {
    return "Credentials[tls=" + tls + ", token=" + (token == null ? "none" : "***") + "]";
  }

  /** {@code authorization: Bearer <token>} on every call. */
  private static final class BearerToken extends CallCredentials {
    private static final Metadata.Key<String> AUTHORIZATION =
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

    private final String header;
    private final boolean requirePrivacy;

    BearerToken(String token, boolean requirePrivacy) {
      this.header = "Bearer " + Objects.requireNonNull(token);
      this.requirePrivacy = requirePrivacy;
    }

    @Override
    public void applyRequestMetadata(
        RequestInfo info, Executor executor, MetadataApplier applier) {
      if (requirePrivacy && info.getSecurityLevel() != SecurityLevel.PRIVACY_AND_INTEGRITY) {
        applier.fail(
            Status.UNAUTHENTICATED.withDescription(
                "ferry: the token goes only over a connection with privacy and integrity"));
        return;
      }
      Metadata headers = new Metadata();
      headers.put(AUTHORIZATION, header);
      applier.apply(headers);
    }

    @Override
    public String toString() {
      return "BearerToken(***)";
    }
  }
}
