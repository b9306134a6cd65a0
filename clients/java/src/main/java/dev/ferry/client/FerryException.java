package dev.ferry.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import dev.ferry.v1.AssignedEventIds;
import dev.ferry.v1.Failure;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.List;
import java.util.Optional;

/**
 * A failed Ferry call, with the details Ferry packs into the {@code grpc-status-details-bin}
 * trailer: the gRPC code, the google.rpc.ErrorInfo reason to branch on, the RetryInfo delay,
 * the BadRequest field violations and, for DEADLINE_EXCEEDED, the AssignedEventIds.
 */
public final class FerryException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final Status.Code code;
  private final transient ErrorInfo errorInfo;
  private final transient RetryInfo retryInfo;
  private final transient BadRequest badRequest;
  private final List<String> assignedEventIds;

  private FerryException(
      Status.Code code,
      String message,
      Throwable cause,
      ErrorInfo errorInfo,
      RetryInfo retryInfo,
      BadRequest badRequest,
      List<String> assignedEventIds) {
    super(describe(code, errorInfo, message), cause);
    this.code = code;
    this.errorInfo = errorInfo;
    this.retryInfo = retryInfo;
    this.badRequest = badRequest;
    this.assignedEventIds = List.copyOf(assignedEventIds);
  }

  /** Reads the status and its details from a failed call. */
  public static FerryException from(StatusRuntimeException e) {
    ErrorInfo errorInfo = null;
    RetryInfo retryInfo = null;
    BadRequest badRequest = null;
    List<String> assigned = List.of();
    com.google.rpc.Status details = StatusProto.fromThrowable(e);
    if (details != null) {
      for (Any any : details.getDetailsList()) {
        try {
          if (any.is(ErrorInfo.class)) {
            errorInfo = any.unpack(ErrorInfo.class);
          } else if (any.is(RetryInfo.class)) {
            retryInfo = any.unpack(RetryInfo.class);
          } else if (any.is(BadRequest.class)) {
            badRequest = any.unpack(BadRequest.class);
          } else if (any.is(AssignedEventIds.class)) {
            assigned = any.unpack(AssignedEventIds.class).getEventIdsList();
          }
        } catch (InvalidProtocolBufferException ignored) {
          // A detail that does not decode is left out; the status code still stands.
        }
      }
    }
    Status status = e.getStatus();
    return new FerryException(
        status.getCode(), status.getDescription(), e, errorInfo, retryInfo, badRequest, assigned);
  }

  /**
   * Reads one refused item of a stream or a batch: a {@link Failure} is a google.rpc.Status with
   * its ErrorInfo reason, BadRequest field and RetryInfo delay flattened.
   *
   * @param assignedEventIds the ids of the request's events, for a KAFKA_ACK_TIMEOUT (else empty)
   */
  public static FerryException from(Failure failure, List<String> assignedEventIds) {
    ErrorInfo errorInfo =
        failure.getReason().isEmpty()
            ? null
            : ErrorInfo.newBuilder().setReason(failure.getReason()).setDomain("ferry.v1").build();
    RetryInfo retryInfo =
        failure.hasRetryDelay()
            ? RetryInfo.newBuilder().setRetryDelay(failure.getRetryDelay()).build()
            : null;
    BadRequest badRequest =
        failure.getField().isEmpty()
            ? null
            : BadRequest.newBuilder()
                .addFieldViolations(
                    BadRequest.FieldViolation.newBuilder()
                        .setField(failure.getField())
                        .setDescription(failure.getMessage()))
                .build();
    Status.Code code = Status.fromCodeValue(failure.getCode()).getCode();
    return new FerryException(
        code, failure.getMessage(), null, errorInfo, retryInfo, badRequest, assignedEventIds);
  }

  static FerryException cancelled(String message, Throwable cause) {
    return new FerryException(Status.Code.CANCELLED, message, cause, null, null, null, List.of());
  }

  /** A publish that got no answer within its overall deadline; its ids are safe to send again. */
  static FerryException deadlineExceeded(
      String message, List<String> eventIds, Throwable lastError) {
    return new FerryException(
        Status.Code.DEADLINE_EXCEEDED, message, lastError, null, null, null, eventIds);
  }

  /** An answer the client cannot read (a bug on one side or the other). */
  static FerryException internal(String message) {
    return new FerryException(Status.Code.INTERNAL, message, null, null, null, null, List.of());
  }

  private static String describe(Status.Code code, ErrorInfo info, String message) {
    String reason = info == null ? "" : " (" + info.getReason() + ")";
    return code + reason + (message == null ? "" : ": " + message);
  }

  /** The gRPC status code. */
  public Status.Code code() {
    return code;
  }

  /** The ErrorInfo reason (e.g. {@code LOG_FULL}); empty when the error carried none. */
  public String reason() {
    return errorInfo == null ? "" : errorInfo.getReason();
  }

  /** The google.rpc.ErrorInfo, when the error carried one (every error Ferry itself sends). */
  public Optional<ErrorInfo> errorInfo() {
    return Optional.ofNullable(errorInfo);
  }

  /** How long the server asked the client to wait before retrying. */
  public Optional<Duration> retryDelay() {
    if (retryInfo == null || !retryInfo.hasRetryDelay()) {
      return Optional.empty();
    }
    var d = retryInfo.getRetryDelay();
    return Optional.of(Duration.ofSeconds(d.getSeconds(), d.getNanos()));
  }

  /** For INVALID_ARGUMENT: the path of the first offending field; empty when none was named. */
  public String field() {
    return badRequest == null || badRequest.getFieldViolationsCount() == 0
        ? ""
        : badRequest.getFieldViolations(0).getField();
  }

  /** The field violations of an INVALID_ARGUMENT. */
  public Optional<BadRequest> badRequest() {
    return Optional.ofNullable(badRequest);
  }

  /**
   * For DEADLINE_EXCEEDED (KAFKA_ACK_TIMEOUT, LOG_COMMIT_TIMEOUT, or no answer in time on a
   * stream): the id of every event of the request, in request order; publish again with these.
   */
  public List<String> assignedEventIds() {
    return assignedEventIds;
  }
}
