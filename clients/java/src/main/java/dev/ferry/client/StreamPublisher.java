package dev.ferry.client;

import dev.ferry.v1.AckLevel;
import dev.ferry.v1.Event;
import dev.ferry.v1.Failure;
import dev.ferry.v1.PublishBatchEntry;
import dev.ferry.v1.PublishResult;
import dev.ferry.v1.PublishStreamAnswer;
import dev.ferry.v1.PublishStreamRequest;
import dev.ferry.v1.PublishStreamResponse;
import dev.ferry.v1.PublisherGrpc;
import io.grpc.Context;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.lang.System.Logger.Level;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Publishes over one {@code PublishStream}: {@link #publish} returns a future at once and the
 * request goes out on the open stream without waiting for the answers to earlier ones.
 *
 * <pre>{@code
 * try (FerryClient ferry = FerryClient.fromEnv();
 *      StreamPublisher stream = ferry.streamPublisher()) {
 *   CompletableFuture<PublishResult> f = stream.publish(event);
 *   ...
 * } // close() waits for every future, then half-closes the stream
 * }</pre>
 *
 * <p>Every event gets its event id (the caller's, or a UUIDv7) before the first send, and every
 * request a request id (a counter); answers are matched by request id. A request refused with
 * UNAVAILABLE or RESOURCE_EXHAUSTED is sent again after the answer's retry delay (or the {@link
 * RetryPolicy} backoff, whichever is longer); other refusals fail its future with a {@link
 * FerryException}. When the stream ends (Ferry draining, the connection lost), a new one opens
 * with backoff and every unanswered request is sent again in its original order with the same
 * event ids; a stream ending with a code the retry policy does not retry fails the requests it
 * left unanswered. Each request has the policy's overall deadline, counted from {@code
 * publish}: past it, its future fails with DEADLINE_EXCEEDED and its event ids.
 *
 * <p>At most {@code maxOutstandingRequests} requests are unanswered at once; {@code publish}
 * blocks while that many are. Futures complete on gRPC's threads: callbacks must not block
 * (use the {@code ...Async} variants for work that may wait, such as another publish).
 */
public final class StreamPublisher implements AutoCloseable {
  /** The default bound on unanswered requests, Ferry's own per-stream bound. */
  public static final int DEFAULT_MAX_OUTSTANDING_REQUESTS = 1024;

  private static final System.Logger LOG = System.getLogger(StreamPublisher.class.getName());
  /** How long close() waits for Ferry to end the half-closed stream before cancelling it. */
  private static final Duration HALF_CLOSE_TIMEOUT = Duration.ofSeconds(5);

  private static final AtomicInteger INSTANCES = new AtomicInteger();

  private final PublisherGrpc.PublisherStub stub;
  private final RetryPolicy retry;
  private final AckLevel ackLevel;
  private final com.google.protobuf.Duration kafkaWait;
  private final Semaphore window;
  private final ScheduledThreadPoolExecutor timer;

  private final ReentrantLock lock = new ReentrantLock();
  /** Signalled whenever a request is done (answered, failed or expired). */
  private final Condition done = lock.newCondition();
  // Everything below is guarded by lock.
  /** Unanswered requests by request id: also their publish order and deadline order. */
  private final TreeMap<Long, Pending> pending = new TreeMap<>();
  private long nextRequestId = 1;
  private Stream current;
  private boolean reconnectScheduled;
  private ScheduledFuture<?> deadlineTimer;
  private int failures;
  /** Written under lock; read without it to refuse publishes early. */
  private volatile boolean closed;

  StreamPublisher(
      PublisherGrpc.PublisherStub stub,
      RetryPolicy retry,
      AckLevel ackLevel,
      com.google.protobuf.Duration kafkaWait,
      int maxOutstandingRequests) {
    if (maxOutstandingRequests < 1) {
      throw new IllegalArgumentException("maxOutstandingRequests must be >= 1");
    }
    this.stub = stub;
    this.retry = retry;
    this.ackLevel = ackLevel;
    this.kafkaWait = kafkaWait;
    this.window = new Semaphore(maxOutstandingRequests);
    String name = "ferry-stream-publisher-" + INSTANCES.incrementAndGet();
    this.timer =
        new ScheduledThreadPoolExecutor(
            1,
            r -> {
              Thread t = new Thread(r, name);
              t.setDaemon(true);
              return t;
            });
    timer.setRemoveOnCancelPolicy(true);
  }

  /**
   * Publishes one event with the client's ack level; blocks only while the window is full.
   *
   * <p>The future fails with a {@link FerryException} as {@link FerryClient#publish(Event)}
   * throws one (an EVENT_ID_CONFLICT is ALREADY_EXISTS).
   *
   * @throws IllegalStateException once {@link #close()} was called
   * @throws FerryException CANCELLED when interrupted while waiting for room in the window
   */
  public CompletableFuture<PublishResult> publish(Event event) {
    CompletableFuture<PublishResult> future = new CompletableFuture<>();
    submit(List.of(FerryClient.withEventId(event)), new Pending(null, future));
    return future;
  }

  /**
   * Publishes events in one request, in order; the future holds one entry per event, in request
   * order, as {@link FerryClient#publishBatch(List)} returns them.
   *
   * @throws IllegalStateException once {@link #close()} was called
   * @throws FerryException CANCELLED when interrupted while waiting for room in the window
   */
  public CompletableFuture<List<PublishBatchEntry>> publishBatch(List<Event> events) {
    List<Event> withIds = new ArrayList<>(events.size());
    for (Event e : events) {
      withIds.add(FerryClient.withEventId(e));
    }
    CompletableFuture<List<PublishBatchEntry>> future = new CompletableFuture<>();
    submit(withIds, new Pending(future, null));
    return future;
  }

  /** How many requests are waiting for their answer. */
  public int outstanding() {
    lock.lock();
    try {
      return pending.size();
    } finally {
      lock.unlock();
    }
  }

  /**
   * Waits until every request published before this call is done (answered, failed or past its
   * deadline); each request's outcome is in its future.
   */
  public void flush() throws InterruptedException {
    lock.lockInterruptibly();
    try {
      long last = nextRequestId - 1;
      while (!pending.isEmpty() && pending.firstKey() <= last) {
        done.await();
      }
    } finally {
      lock.unlock();
    }
  }

  /**
   * Stops taking new events, waits for every outstanding future (each at most its overall
   * deadline), then half-closes the stream and waits briefly for Ferry to end it. Interrupted,
   * it fails what is still unanswered with CANCELLED and cancels the stream.
   */
  @Override
  public void close() {
    Stream last = null;
    InterruptedException interrupted = null;
    lock.lock();
    try {
      closed = true;
      while (!pending.isEmpty()) {
        done.await();
      }
      last = current;
      if (last != null) {
        last.halfClose();
      }
    } catch (InterruptedException e) {
      interrupted = e;
    } finally {
      lock.unlock();
    }
    if (interrupted != null) {
      Thread.currentThread().interrupt();
      abort(interrupted);
      return;
    }
    try {
      if (last != null) {
        last.ended.get(HALF_CLOSE_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (ExecutionException | TimeoutException e) {
      LOG.log(Level.DEBUG, "the half-closed stream did not end in time; cancelling it");
    } finally {
      if (last != null) {
        last.cancel("stream publisher closed");
      }
      timer.shutdownNow();
    }
  }

  private void abort(InterruptedException cause) {
    List<Runnable> completions = new ArrayList<>();
    lock.lock();
    try {
      for (Pending p : new ArrayList<>(pending.values())) {
        FerryException error =
            FerryException.cancelled("stream publisher closed while interrupted", cause);
        completions.add(finish(p, error));
      }
      if (current != null) {
        current.cancel("stream publisher closed while interrupted");
      }
    } finally {
      lock.unlock();
    }
    completions.forEach(Runnable::run);
    timer.shutdownNow();
  }

  private void submit(List<Event> events, Pending p) {
    if (closed) {
      throw new IllegalStateException("the StreamPublisher is closed");
    }
    try {
      window.acquire();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw FerryException.cancelled("interrupted while waiting for room in the window", e);
    }
    lock.lock();
    try {
      if (closed) {
        window.release();
        throw new IllegalStateException("the StreamPublisher is closed");
      }
      PublishStreamRequest.Builder req =
          PublishStreamRequest.newBuilder()
              .setRequestId(nextRequestId++)
              .addAllEvents(events)
              .setAckLevel(ackLevel);
      if (kafkaWait != null) {
        req.setKafkaWait(kafkaWait);
      }
      p.request = req.build();
      p.deadline = System.nanoTime() + retry.overallDeadline().toNanos();
      pending.put(p.request.getRequestId(), p);
      armDeadlineTimer();
      if (current != null) {
        current.send(p);
      } else if (!reconnectScheduled) {
        openStream();
      } // else: sent when the stream reopens
    } finally {
      lock.unlock();
    }
  }

  /** Opens a stream and sends every unanswered request not waiting to retry, in order. */
  private void openStream() {
    Stream s = new Stream();
    current = s;
    // Forked: the stream outlives the publish call (and the gRPC Context) that opened it.
    Context.current().fork().run(() -> stub.publishStream(s));
    for (Pending p : pending.values()) {
      if (p.sentOn == null && !p.waitingToRetry) {
        s.send(p);
      }
    }
  }

  private void onResponse(Stream s, PublishStreamResponse response) {
    for (PublishStreamAnswer a : response.getAnswersList()) {
      onAnswer(
          s,
          a.getRequestId(),
          a.getEntriesList(),
          a.hasError() ? a.getError() : null,
          a.getAssignedEventIdsList());
    }
  }

  /** One request's answer: its entries, or its refusal (null when none). */
  private void onAnswer(
      Stream s,
      long requestId,
      List<PublishBatchEntry> entries,
      Failure refusal,
      List<String> assignedEventIds) {
    Runnable completion;
    lock.lock();
    try {
      s.answered = true;
      Pending p = pending.get(requestId);
      if (s != current || p == null || p.sentOn != s) {
        if (requestId == 0 && refusal != null) {
          LOG.log(Level.WARNING, "Ferry could not read a request: {0}", refusal);
        } else {
          LOG.log(Level.DEBUG, "answer to unknown request {0}", requestId);
        }
        return;
      }
      p.sentOn = null;
      completion =
          refusal == null
              ? finish(p, entries)
              : retryOrFail(p, FerryException.from(refusal, assignedEventIds));
    } finally {
      lock.unlock();
    }
    if (completion != null) {
      completion.run();
    }
  }

  /** Schedules a refused request's retry, or fails it; null when it will be retried. */
  private Runnable retryOrFail(Pending p, FerryException error) {
    Status.Code code = error.code();
    if (code != Status.Code.UNAVAILABLE && code != Status.Code.RESOURCE_EXHAUSTED) {
      return finish(p, error);
    }
    Duration wait = retry.backoff(p.retries++);
    if (error.retryDelay().isPresent() && error.retryDelay().get().compareTo(wait) > 0) {
      wait = error.retryDelay().get();
    }
    if (wait.toNanos() >= p.deadline - System.nanoTime()) {
      return finish(p, error);
    }
    LOG.log(
        Level.INFO,
        "request {0} (event {1}) refused: {2}; retry {3} in {4,number,#} ms",
        p.request.getRequestId(),
        p.firstEventId(),
        error.getMessage(),
        p.retries,
        wait.toMillis());
    p.waitingToRetry = true;
    p.lastError = error;
    try {
      timer.schedule(() -> resend(p), wait.toNanos(), TimeUnit.NANOSECONDS);
    } catch (RejectedExecutionException shutDown) {
      return finish(p, error);
    }
    return null;
  }

  private void resend(Pending p) {
    lock.lock();
    try {
      p.waitingToRetry = false;
      if (pending.get(p.request.getRequestId()) != p) {
        return; // failed meanwhile (its deadline, an interrupted close)
      }
      if (current != null) {
        current.send(p);
      } else if (!reconnectScheduled) {
        openStream();
      } // else: sent when the stream reopens
    } finally {
      lock.unlock();
    }
  }

  private void onStreamEnd(Stream s, StatusRuntimeException end) {
    List<Runnable> completions = new ArrayList<>();
    lock.lock();
    try {
      if (s != current) {
        return;
      }
      current = null;
      List<Pending> unanswered = new ArrayList<>();
      for (Pending p : pending.values()) {
        if (p.sentOn == s) {
          p.sentOn = null;
          unanswered.add(p);
        }
      }
      if (s.halfClosed && end.getStatus().isOk()) {
        return; // closed by close(): everything was answered
      }
      FerryException error =
          end.getStatus().isOk()
              ? FerryException.from(
                  Status.UNAVAILABLE
                      .withDescription("Ferry ended the stream with requests unanswered")
                      .asRuntimeException())
              : FerryException.from(end);
      if (!RetryPolicy.isRetryable(error.code(), error.errorInfo().isPresent(), false)) {
        LOG.log(
            Level.ERROR,
            "publish stream ended: {0}; failing its {1,number,#} unanswered requests",
            error.getMessage(),
            unanswered.size());
        for (Pending p : unanswered) {
          completions.add(finish(p, error));
        }
      }
      unanswered.forEach(p -> p.lastError = error);
      failures = s.answered ? 0 : failures + 1;
      if (!hasUnsent()) {
        LOG.log(Level.DEBUG, "publish stream ended: {0}", error.getMessage());
        return;
      }
      Duration wait = retry.backoff(failures);
      if (error.retryDelay().isPresent() && error.retryDelay().get().compareTo(wait) > 0) {
        wait = error.retryDelay().get();
      }
      LOG.log(
          Level.WARNING,
          "publish stream ended: {0}; sending {1,number,#} unanswered requests again"
              + " in {2,number,#} ms",
          error.getMessage(),
          unanswered.size(),
          wait.toMillis());
      try {
        timer.schedule(this::reconnect, wait.toNanos(), TimeUnit.NANOSECONDS);
        reconnectScheduled = true;
      } catch (RejectedExecutionException shutDown) {
        // close() gave up on the unanswered requests: nothing to send.
      }
    } finally {
      lock.unlock();
      completions.forEach(Runnable::run);
    }
  }

  private void reconnect() {
    lock.lock();
    try {
      reconnectScheduled = false;
      if (current == null && hasUnsent()) {
        openStream();
      }
    } finally {
      lock.unlock();
    }
  }

  /** Whether a request waits for a stream to be sent on (not for its retry delay). */
  private boolean hasUnsent() {
    for (Pending p : pending.values()) {
      if (p.sentOn == null && !p.waitingToRetry) {
        return true;
      }
    }
    return false;
  }

  /** Arms the timer for the oldest request's deadline (the earliest: deadlines follow ids). */
  private void armDeadlineTimer() {
    if (deadlineTimer != null || pending.isEmpty()) {
      return;
    }
    long delay = pending.firstEntry().getValue().deadline - System.nanoTime();
    try {
      deadlineTimer = timer.schedule(this::expireDue, Math.max(delay, 0), TimeUnit.NANOSECONDS);
    } catch (RejectedExecutionException shutDown) {
      // Closing: close() no longer waits for deadlines.
    }
  }

  private void expireDue() {
    List<Runnable> completions = new ArrayList<>();
    lock.lock();
    try {
      deadlineTimer = null;
      long now = System.nanoTime();
      while (!pending.isEmpty() && pending.firstEntry().getValue().deadline - now <= 0) {
        Pending p = pending.firstEntry().getValue();
        String state =
            p.sentOn != null
                ? "sent, unanswered"
                : p.waitingToRetry ? "waiting to retry" : "waiting for a stream";
        completions.add(
            finish(
                p,
                FerryException.deadlineExceeded(
                    "no answer within the overall deadline of "
                        + retry.overallDeadline().toMillis()
                        + " ms ("
                        + state
                        + "); publish again with the same event ids",
                    p.eventIds(),
                    p.lastError)));
      }
      armDeadlineTimer();
    } finally {
      lock.unlock();
    }
    completions.forEach(Runnable::run);
  }

  /** Removes a done request (under the lock); the returned completion runs after unlocking. */
  private Runnable finish(Pending p, Object outcome) {
    if (pending.remove(p.request.getRequestId()) == null) {
      return () -> {};
    }
    p.sentOn = null;
    window.release();
    done.signalAll();
    return () -> p.complete(outcome);
  }

  /** One request until it is done: its future, deadline and where it was last sent. */
  private static final class Pending {
    private final CompletableFuture<List<PublishBatchEntry>> batch;
    private final CompletableFuture<PublishResult> single;
    private PublishStreamRequest request;
    private long deadline;
    /** The stream it waits for an answer on; null when not sent (or answered with a refusal). */
    private Stream sentOn;
    private boolean waitingToRetry;
    private int retries;
    private FerryException lastError;

    Pending(
        CompletableFuture<List<PublishBatchEntry>> batch,
        CompletableFuture<PublishResult> single) {
      this.batch = batch;
      this.single = single;
    }

    String firstEventId() {
      return request.getEventsCount() == 0 ? "" : request.getEvents(0).getEventId();
    }

    List<String> eventIds() {
      List<String> ids = new ArrayList<>(request.getEventsCount());
      request.getEventsList().forEach(e -> ids.add(e.getEventId()));
      return ids;
    }

    @SuppressWarnings("unchecked")
    void complete(Object outcome) {
      if (outcome instanceof FerryException) {
        (batch != null ? batch : single).completeExceptionally((FerryException) outcome);
        return;
      }
      List<PublishBatchEntry> entries = (List<PublishBatchEntry>) outcome;
      if (batch != null) {
        batch.complete(entries);
      } else if (entries.size() != 1) {
        single.completeExceptionally(
            FerryException.internal("answer with " + entries.size() + " entries for one event"));
      } else if (entries.get(0).hasError()) {
        single.completeExceptionally(FerryException.from(entries.get(0).getError(), List.of()));
      } else {
        single.complete(entries.get(0).getResult());
      }
    }
  }

  /** One PublishStream call. Sends are made under the publisher's lock. */
  private final class Stream
      implements ClientResponseObserver<PublishStreamRequest, PublishStreamResponse> {
    private final CompletableFuture<StatusRuntimeException> ended = new CompletableFuture<>();
    private ClientCallStreamObserver<PublishStreamRequest> requests;
    // Guarded by the publisher's lock: whether Ferry answered anything on it, and close() ended it.
    private boolean answered;
    private boolean halfClosed;

    @Override
    public void beforeStart(ClientCallStreamObserver<PublishStreamRequest> requestStream) {
      this.requests = requestStream;
    }

    void send(Pending p) {
      p.sentOn = this;
      try {
        requests.onNext(p.request);
      } catch (IllegalStateException | StatusRuntimeException gone) {
        // The call ended under us: onError follows and the request is sent again.
      }
    }

    void halfClose() {
      halfClosed = true;
      try {
        requests.onCompleted();
      } catch (IllegalStateException alreadyEnded) {
        // Nothing left to close.
      }
    }

    void cancel(String why) {
      if (!ended.isDone()) {
        requests.cancel(why, null);
      }
    }

    @Override
    public void onNext(PublishStreamResponse response) {
      onResponse(this, response);
    }

    @Override
    public void onError(Throwable t) {
      StatusRuntimeException end =
          t instanceof StatusRuntimeException
              ? (StatusRuntimeException) t
              : Status.fromThrowable(t).asRuntimeException(Status.trailersFromThrowable(t));
      onStreamEnd(this, end);
      ended.complete(end);
    }

    @Override
    public void onCompleted() {
      StatusRuntimeException end = Status.OK.asRuntimeException();
      onStreamEnd(this, end);
      ended.complete(end);
    }
  }
}
