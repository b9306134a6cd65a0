package dev.ferry.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.ferry.v1.PublishRequest;
import dev.ferry.v1.PublishResponse;
import dev.ferry.v1.PublishResult;
import dev.ferry.v1.PublisherGrpc;
import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.stub.StreamObserver;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class CredentialsTest {
  @TempDir Path dir;

  private Path tokenFile(String text) throws Exception {
    Path path = dir.resolve("token");
    Files.writeString(path, text);
    return path;
  }

  @Test
  void fromEnvReadsTheVariablesFerryStatusReads() throws Exception {
    assertEquals(Credentials.NONE, Credentials.fromEnv(Map.of()));
    Path token = tokenFile("# orders\n\n  s3cret \nother\n");
    Credentials c =
        Credentials.fromEnv(
            Map.of(
                "FERRY_TLS_CA", "/tls/ca.pem",
                "FERRY_TLS_CLIENT_CERT", "/tls/client.pem",
                "FERRY_TLS_CLIENT_KEY", "/tls/client.key",
                "FERRY_TLS_SERVER_NAME", "ferry.local",
                "FERRY_TOKEN_FILE", token + ", /secrets/other"));
    assertEquals(
        new Credentials.Tls("/tls/ca.pem", "/tls/client.pem", "/tls/client.key", "ferry.local"),
        c.tls());
    assertEquals("s3cret", c.token());
    // A client certificate alone does not turn TLS on: FERRY_TLS_CA does.
    assertNull(Credentials.fromEnv(Map.of("FERRY_TLS_CLIENT_CERT", "/tls/client.pem")).tls());
  }

  @Test
  void aTokenFileWithoutATokenOrMissingIsAClearError() throws Exception {
    Path empty = tokenFile("# nothing\n\n");
    assertThrows(IllegalArgumentException.class, () -> Credentials.readTokenFile(empty));
    assertThrows(
        UncheckedIOException.class, () -> Credentials.readTokenFile(dir.resolve("missing")));
  }

  @ParameterizedTest
  @ValueSource(
      strings = {
        "127.0.0.1:50051",
        "localhost:50051",
        "[::1]:50051",
        "unix:///run/ferry.sock",
        "dns:///localhost:1"
      })
  void aTokenWithoutTlsGoesToLocalAddresses(String target) {
    assertTrue(Credentials.isLocal(target));
    new Credentials(null, "t").channelCredentials(target);
  }

  @ParameterizedTest
  @ValueSource(strings = {"ferry:50051", "10.0.0.7:50051", "[2001:db8::1]:50051", "128.0.0.1:1"})
  void aTokenWithoutTlsIsRefusedForOtherAddresses(String target) {
    assertFalse(Credentials.isLocal(target));
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () -> FerryClient.builder().target(target).credentials(new Credentials(null, "t")).build());
    assertTrue(e.getMessage().contains("not to " + target), e.getMessage());
  }

  @Test
  void tlsSettingsThatCannotWorkAreRefused() {
    Credentials certWithoutKey =
        new Credentials(new Credentials.Tls(null, "/c.pem", null, null), null);
    assertThrows(
        IllegalArgumentException.class,
        () -> FerryClient.builder().target("ferry:1").credentials(certWithoutKey).build());
    Credentials missingCa =
        new Credentials(new Credentials.Tls("/no/such/ca.pem", null, null, null), null);
    assertThrows(
        UncheckedIOException.class,
        () -> FerryClient.builder().target("ferry:1").credentials(missingCa).build());
  }

  @Test
  void theTokenNeverShowsInToString() {
    assertFalse(new Credentials(null, "s3cret").toString().contains("s3cret"));
  }

  @Test
  void theTokenGoesWithEveryCallAsABearerHeader() throws Exception {
    List<String> seen = new CopyOnWriteArrayList<>();
    Metadata.Key<String> authorization =
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
    ServerInterceptor record =
        new ServerInterceptor() {
          @Override
          public <Q, R> ServerCall.Listener<Q> interceptCall(
              ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
            seen.add(String.valueOf(headers.get(authorization)));
            return next.startCall(call, headers);
          }
        };
    PublisherGrpc.PublisherImplBase publisher =
        new PublisherGrpc.PublisherImplBase() {
          @Override
          public void publish(PublishRequest req, StreamObserver<PublishResponse> out) {
            PublishResult r =
                PublishResult.newBuilder().setEventId(req.getEvent().getEventId()).build();
            out.onNext(PublishResponse.newBuilder().setResult(r).build());
            out.onCompleted();
          }
        };
    Server server =
        Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
            .addService(ServerInterceptors.intercept(publisher, record))
            .build()
            .start();
    try (FerryClient ferry =
        FerryClient.builder()
            .target("127.0.0.1:" + server.getPort())
            .credentials(new Credentials(null, "tok-1"))
            .build()) {
      ferry.publish("orders", new byte[] {1}, null, List.of());
      ferry.publish("orders", new byte[] {2}, null, List.of());
    } finally {
      server.shutdownNow();
    }
    assertEquals(List.of("Bearer tok-1", "Bearer tok-1"), seen);
  }
}
