package dev.ferry.client;

import com.google.protobuf.Any;
import com.google.protobuf.Message;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.grpc.BindableService;
import io.grpc.ClientInterceptor;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.protobuf.StatusProto;
import java.io.IOException;
import java.time.Duration;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;

/** An in-process server for one fake service, and errors shaped like Ferry's. */
final class Fakes implements AutoCloseable {
  final String name = InProcessServerBuilder.generateName();
  final Server server;
  final ManagedChannel channel;
  final ScheduledExecutorService scheduler = Executors.newSingleThreadScheduledExecutor();

  /** Serves {@code service}; the channel runs each call through {@code interceptors}. */
  Fakes(BindableService service, ClientInterceptor... interceptors) throws IOException {
    server = InProcessServerBuilder.forName(name).addService(service).build().start();
    channel = InProcessChannelBuilder.forName(name).intercept(interceptors).build();
  }

  @Override
  public void close() {
    channel.shutdownNow();
    server.shutdownNow();
    scheduler.shutdownNow();
  }

  /** A status with an ErrorInfo of {@code reason} (none when null) and further details. */
  static StatusRuntimeException error(Status.Code code, String reason, Message... details) {
    com.google.rpc.Status.Builder s =
        com.google.rpc.Status.newBuilder().setCode(code.value()).setMessage("fake " + code);
    if (reason != null) {
      s.addDetails(
          Any.pack(ErrorInfo.newBuilder().setReason(reason).setDomain("ferry.v1").build()));
    }
    for (Message m : details) {
      s.addDetails(Any.pack(m));
    }
    return StatusProto.toStatusRuntimeException(s.build());
  }

  static RetryInfo retryAfter(Duration d) {
    return RetryInfo.newBuilder().setRetryDelay(FerryClient.protoDuration(d)).build();
  }
}
