package dev.ferry.client;

import dev.ferry.v1.AckIdResult;
import dev.ferry.v1.AckIdStatus;
import dev.ferry.v1.AckIds;
import dev.ferry.v1.Delivery;
import dev.ferry.v1.ExtendIds;
import dev.ferry.v1.NackIds;
import dev.ferry.v1.SubscribeRequest;
import dev.ferry.v1.SubscribeResponse;
import dev.ferry.v1.SubscriberGrpc;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.lang.System.Logger.Level;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Runs a handler over a subscription's deliveries: acks what the handler returns from, nacks what
 * it throws from, extends leases while handlers run, and reconnects with backoff when the stream
 * ends. Only INVALID_ARGUMENT and FAILED_PRECONDITION (a request that can never succeed) stop it;
 * {@link #awaitTerminated()} then throws them.
 */
public final class Subscriber implements AutoCloseable {
  private static final System.Logger LOG = System.getLogger(Subscriber.class.getName());
  private static final Duration DRAIN_TIMEOUT = Duration.ofSeconds(5);

  private enum State {
    NEW,
    RUNNING,
    STOPPING,
    STOPPED
  }

  private final SubscriberGrpc.SubscriberStub stub;
  private final SubscriberOptions options;
  private final DeliveryHandler handler;
  private final RetryPolicy backoff;
  private final ExecutorService workers;
  private final ScheduledExecutorService timer;
  private final CountDownLatch stopSignal = new CountDownLatch(1);
  private final CompletableFuture<Void> terminated = new CompletableFuture<>();
  private volatile State state = State.NEW;
  private volatile Session current;
  private Thread loop;

  Subscriber(
      SubscriberGrpc.SubscriberStub stub,
      SubscriberOptions options,
      DeliveryHandler handler,
      RetryPolicy backoff) {
    this.stub = stub;
    this.options = options;
    this.handler = handler;
    this.backoff = backoff;
    String name = options.subscription();
    this.workers = Executors.newFixedThreadPool(options.maxConcurrency, daemon("ferry-" + name));
    this.timer = Executors.newSingleThreadScheduledExecutor(daemon("ferry-lease-" + name));
  }

  /** Opens the stream in the background; returns at once. */
  public synchronized void start() {
    if (state != State.NEW) {
      throw new IllegalStateException("a Subscriber starts once");
    }
    state = State.RUNNING;
    loop = daemon("ferry-sub-" + options.subscription()).newThread(this::run);
    loop.start();
  }

  /** {@link #stop(Duration)} with the options' stop grace. */
  public void stop() {
    stop(options.stopGrace);
  }

  /**
   * Stops: no new handler starts, running ones get {@code grace} to finish and their acks are
   * sent, then the stream is half-closed. Deliveries not handled come again (on another stream).
   * Do not call it from a handler.
   */
  public void stop(Duration grace) {
    boolean stopsHere;
    synchronized (this) {
      if (state == State.NEW) {
        state = State.STOPPED;
        shutdownExecutors();
        terminated.complete(null);
        return;
      }
      stopsHere = state == State.RUNNING;
      if (stopsHere) {
        state = State.STOPPING;
      }
    }
    if (!stopsHere) { // stopped, failed, or another thread is stopping it
      awaitQuietly(grace.plus(DRAIN_TIMEOUT));
      return;
    }
    stopSignal.countDown();
    workers.shutdown();
    try {
      if (!workers.awaitTermination(grace.toMillis(), TimeUnit.MILLISECONDS)) {
        LOG.log(Level.WARNING, "handlers still running after {0}; stopping without them", grace);
      }
      Session s = current;
      if (s != null) {
        s.drainAndClose(DRAIN_TIMEOUT);
      }
      loop.join(DRAIN_TIMEOUT.toMillis());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } finally {
      shutdownExecutors();
      state = State.STOPPED;
      terminated.complete(null);
    }
  }

  @Override
  public void close() {
    stop();
  }

  /** Waits until stopped; throws the {@link FerryException} that ended it, if one did. */
  public void awaitTerminated() throws InterruptedException {
    try {
      terminated.get();
    } catch (ExecutionException e) {
      throw (FerryException) e.getCause();
    }
  }

  /** As {@link #awaitTerminated()}, up to {@code timeout}; false when still running. */
  public boolean awaitTerminated(Duration timeout) throws InterruptedException {
    try {
      terminated.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
      return true;
    } catch (TimeoutException e) {
      return false;
    } catch (ExecutionException e) {
      throw (FerryException) e.getCause();
    }
  }

  private void awaitQuietly(Duration timeout) {
    try {
      terminated.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (ExecutionException | TimeoutException ignored) {
      // Already failed or stuck: nothing more to wait for here.
    }
  }

  private void run() {
    int failures = 0;
    while (true) {
      Session session;
      synchronized (this) {
        // Under the lock that stop() takes: a stream opened here is the one stop() closes.
        if (state != State.RUNNING) {
          return;
        }
        session = new Session();
        current = session;
        session.start();
      }
      StatusRuntimeException end = session.awaitEnd();
      if (state != State.RUNNING) {
        return;
      }
      FerryException error = FerryException.from(end);
      if (error.code() == Status.Code.INVALID_ARGUMENT
          || error.code() == Status.Code.FAILED_PRECONDITION) {
        LOG.log(Level.ERROR, "subscription {0} refused: {1}", options.subscription(), error);
        synchronized (this) {
          state = State.STOPPED;
        }
        shutdownExecutors();
        terminated.completeExceptionally(error);
        return;
      }
      failures = session.opened ? 0 : failures + 1;
      Duration wait = backoff.backoff(failures);
      if (error.retryDelay().isPresent() && error.retryDelay().get().compareTo(wait) > 0) {
        wait = error.retryDelay().get();
      }
      LOG.log(
          Level.WARNING,
          "subscription {0} stream ended: {1}; reconnecting in {2,number,#} ms",
          options.subscription(),
          error.getMessage(),
          wait.toMillis());
      try {
        if (stopSignal.await(wait.toMillis(), TimeUnit.MILLISECONDS)) {
          return;
        }
      } catch (InterruptedException e) {
        return;
      }
    }
  }

  private void shutdownExecutors() {
    workers.shutdownNow();
    timer.shutdownNow();
  }

  private static ThreadFactory daemon(String prefix) {
    AtomicInteger n = new AtomicInteger();
    return r -> {
      Thread t = new Thread(r, prefix + "-" + n.incrementAndGet());
      t.setDaemon(true);
      return t;
    };
  }

  /** One Subscribe stream: its leases and the requests sent on it. */
  private final class Session
      implements ClientResponseObserver<SubscribeRequest, SubscribeResponse> {
    private final CompletableFuture<StatusRuntimeException> ended = new CompletableFuture<>();
    /** Ack id to the local time (nanos) its lease ends, for deliveries not yet acked or nacked. */
    private final Map<String, Long> leases = new ConcurrentHashMap<>();
    private ClientCallStreamObserver<SubscribeRequest> requests;
    private volatile boolean opened;
    private volatile long leaseNanos = TimeUnit.SECONDS.toNanos(30);
    private volatile ScheduledFuture<?> extender;
    // Guarded by this: the request stream is not thread-safe.
    private boolean closed;
    private int sent;
    private int answered;

    void start() {
      stub.subscribe(this);
      send(SubscribeRequest.newBuilder().setOpen(options.open).build());
    }

    StatusRuntimeException awaitEnd() {
      try {
        return ended.get();
      } catch (InterruptedException | ExecutionException e) {
        requests.cancel("subscriber interrupted", e);
        return Status.CANCELLED.withCause(e).asRuntimeException();
      } finally {
        if (extender != null) {
          extender.cancel(false);
        }
      }
    }

    @Override
    public void beforeStart(ClientCallStreamObserver<SubscribeRequest> requestStream) {
      this.requests = requestStream;
    }

    @Override
    public void onNext(SubscribeResponse response) {
      switch (response.getResponseCase()) {
        case OPENED:
          var lease = response.getOpened().getLeaseDuration();
          leaseNanos = TimeUnit.SECONDS.toNanos(lease.getSeconds()) + lease.getNanos();
          opened = true;
          long period = Math.max(leaseNanos / 3, TimeUnit.MILLISECONDS.toNanos(200));
          try {
            extender =
                timer.scheduleAtFixedRate(this::extendDue, period, period, TimeUnit.NANOSECONDS);
          } catch (RejectedExecutionException stopping) {
            // Stopped while opening: the stream is closed right after.
          }
          LOG.log(Level.INFO, "subscription {0} open", options.subscription());
          answered(); // the answer to `open`
          break;
        case DELIVERIES:
          for (Delivery d : response.getDeliveries().getDeliveriesList()) {
            leases.put(d.getAckId(), System.nanoTime() + leaseNanos);
            try {
              workers.execute(() -> handle(d));
            } catch (RejectedExecutionException stopping) {
              leases.remove(d.getAckId()); // returned to Ferry when the stream closes
            }
          }
          break;
        case ACK_RESULTS:
          for (AckIdResult r : response.getAckResults().getResultsList()) {
            if (r.getStatus() != AckIdStatus.ACK_ID_STATUS_APPLIED
                && r.getStatus() != AckIdStatus.ACK_ID_STATUS_ALREADY_ACKED) {
              LOG.log(Level.WARNING, "ack id {0}: {1}", r.getAckId(), r.getStatus());
            }
          }
          answered();
          break;
        case REJECTED:
          LOG.log(Level.WARNING, "request rejected: {0}", response.getRejected());
          answered();
          break;
        default:
          LOG.log(Level.DEBUG, "unknown response ignored: {0}", response.getResponseCase());
      }
    }

    @Override
    public void onError(Throwable t) {
      end(
          t instanceof StatusRuntimeException
              ? (StatusRuntimeException) t
              : Status.fromThrowable(t).asRuntimeException(Status.trailersFromThrowable(t)));
    }

    @Override
    public void onCompleted() {
      end(Status.UNAVAILABLE.withDescription("the server ended the stream").asRuntimeException());
    }

    private void end(StatusRuntimeException status) {
      synchronized (this) {
        closed = true;
        notifyAll();
      }
      leases.clear(); // Ferry returns the leases of a closed stream
      ended.complete(status);
    }

    private void handle(Delivery d) {
      if (state != State.RUNNING || ended.isDone()) {
        return; // not started: the lease goes back when the stream closes
      }
      boolean ok;
      try {
        handler.handle(d);
        ok = true;
      } catch (Throwable t) {
        LOG.log(
            Level.WARNING,
            "handler failed on event " + d.getEvent().getEventId() + " (attempt "
                + d.getDeliveryAttempt() + "); nacking",
            t);
        ok = false;
      }
      leases.remove(d.getAckId());
      SubscribeRequest.Builder r = SubscribeRequest.newBuilder();
      if (ok) {
        r.setAck(AckIds.newBuilder().addAckIds(d.getAckId()));
      } else {
        NackIds.Builder nack = NackIds.newBuilder().addAckIds(d.getAckId());
        if (options.nackDelay != null) {
          nack.setRedeliveryDelay(FerryClient.protoDuration(options.nackDelay));
        }
        r.setNack(nack);
      }
      if (!send(r.build())) {
        LOG.log(Level.DEBUG, "stream closed; {0} will come again", d.getEvent().getEventId());
      }
    }

    private void extendDue() {
      long now = System.nanoTime();
      List<String> due = new ArrayList<>();
      leases.forEach(
          (ackId, until) -> {
            if (until - now <= leaseNanos / 2) {
              due.add(ackId);
            }
          });
      if (due.isEmpty()) {
        return;
      }
      ExtendIds extend =
          ExtendIds.newBuilder()
              .addAllAckIds(due)
              .setLeaseDuration(FerryClient.protoDuration(Duration.ofNanos(leaseNanos)))
              .build();
      if (send(SubscribeRequest.newBuilder().setExtend(extend).build())) {
        due.forEach(id -> leases.computeIfPresent(id, (k, v) -> now + leaseNanos));
      }
    }

    private synchronized boolean send(SubscribeRequest request) {
      if (closed) {
        return false;
      }
      try {
        requests.onNext(request);
      } catch (IllegalStateException | StatusRuntimeException gone) {
        return false; // the call ended under us; its leases are returned
      }
      sent++;
      return true;
    }

    private synchronized void answered() {
      answered++;
      notifyAll();
    }

    /** Half-closes, waits for the answers to what was sent, then ends the call. */
    void drainAndClose(Duration timeout) throws InterruptedException {
      synchronized (this) {
        if (!closed) {
          closed = true;
          try {
            requests.onCompleted();
          } catch (IllegalStateException alreadyEnded) {
            // The call ended under us: nothing is left to answer.
          }
          long until = System.nanoTime() + timeout.toNanos();
          while (answered < sent && !ended.isDone()) {
            long left = until - System.nanoTime();
            if (left <= 0) {
              LOG.log(Level.WARNING, "{0} acks unanswered at stop", sent - answered);
              break;
            }
            TimeUnit.NANOSECONDS.timedWait(this, left);
          }
        }
      }
      // Ferry keeps a half-closed stream open; cancelling returns its unhandled leases.
      requests.cancel("subscriber stopped", null);
    }
  }
}
