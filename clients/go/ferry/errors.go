package ferry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/ferry-sidecar/ferry/clients/go/ferryv1"
)

// Error is a failed Ferry call (or one refused event of a batch): the gRPC status with its
// google.rpc details decoded. status.Code and status.FromError work on it, also wrapped.
type Error struct {
	Code    codes.Code
	Message string
	// Reason is the google.rpc.ErrorInfo reason (stable, for programs to branch on); empty
	// when the status carried no ErrorInfo.
	Reason    string
	ErrorInfo *errdetails.ErrorInfo
	// RetryInfo is the server's requested wait before a retry, if it sent one.
	RetryInfo  *errdetails.RetryInfo
	BadRequest *errdetails.BadRequest
	// AssignedEventIDs are the event ids of a publish that ran out of time, in request order.
	AssignedEventIDs []string

	status *status.Status
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("ferry: %s (%s): %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("ferry: %s: %s", e.Code, e.Message)
}

// GRPCStatus is the call's status with all its details.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// retryDelay is the RetryInfo delay, 0 without one.
func (e *Error) retryDelay() time.Duration {
	if e.RetryInfo == nil {
		return 0
	}
	return e.RetryInfo.GetRetryDelay().AsDuration()
}

// toError decodes the status of a failed call, with the details this package knows.
func toError(err error) *Error {
	if e, ok := err.(*Error); ok {
		return e
	}
	st := status.Convert(err)
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			e.ErrorInfo, e.Reason = d, d.GetReason()
		case *errdetails.RetryInfo:
			e.RetryInfo = d
		case *errdetails.BadRequest:
			e.BadRequest = d
		case *ferryv1.AssignedEventIds:
			e.AssignedEventIDs = d.GetEventIds()
		}
	}
	return e
}

// failureError turns a Failure (one refused event of a batch, one refused request of a
// stream) into an Error, with its reason, field and retry delay as the details a status
// would carry. assigned are the request's event ids of a KAFKA_ACK_TIMEOUT answer.
func failureError(f *ferryv1.Failure, assigned ...string) *Error {
	e := &Error{Code: codes.Code(f.GetCode()), Message: f.GetMessage(), Reason: f.GetReason()}
	var details []protoadapt.MessageV1
	if f.GetReason() != "" {
		e.ErrorInfo = &errdetails.ErrorInfo{Reason: f.GetReason(), Domain: "ferry.v1"}
		details = append(details, e.ErrorInfo)
	}
	if f.GetRetryDelay() != nil {
		e.RetryInfo = &errdetails.RetryInfo{RetryDelay: f.GetRetryDelay()}
		details = append(details, e.RetryInfo)
	}
	if f.GetField() != "" {
		e.BadRequest = &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: f.GetField(), Description: f.GetMessage()},
		}}
		details = append(details, e.BadRequest)
	}
	if len(assigned) > 0 {
		e.AssignedEventIDs = assigned
		details = append(details, &ferryv1.AssignedEventIds{EventIds: assigned})
	}
	e.status = status.New(e.Code, e.Message)
	if st, err := e.status.WithDetails(details...); err == nil {
		e.status = st
	}
	return e
}

// Retryable reports whether a publish that failed with err may be sent again with the same
// event ids, given the context the caller called with:
//   - UNAVAILABLE: Ferry is draining or its storage failed; nothing was written.
//   - RESOURCE_EXHAUSTED with an ErrorInfo: the log or disk is full for now. Without one the
//     gRPC transport refused a request over its size limit, which can never succeed.
//   - CANCELLED, unless ctx is done: the server side stopped the call.
//   - DEADLINE_EXCEEDED, unless ctx is done: one attempt ran out of time.
//
// INVALID_ARGUMENT, ALREADY_EXISTS, FAILED_PRECONDITION, NOT_FOUND and the rest are final.
func Retryable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	e := toError(err)
	switch e.Code {
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
		return true
	case codes.ResourceExhausted:
		return e.ErrorInfo != nil
	}
	return false
}

// backoff is capped exponential backoff with ±20% jitter.
type backoff struct {
	initial, max, next time.Duration
}

func newBackoff(r retryConfig) *backoff { return &backoff{initial: r.initial, max: r.max} }

// wait is the pause before the next attempt: the backoff, or the server's RetryInfo delay
// when that is longer.
func (b *backoff) wait(serverDelay time.Duration) time.Duration {
	if b.next == 0 {
		b.next = b.initial
	}
	d := time.Duration(float64(b.next) * (0.8 + 0.4*rand.Float64()))
	b.next = min(2*b.next, b.max)
	return max(d, serverDelay)
}

func (b *backoff) reset() { b.next = 0 }

// sleep waits d or until ctx is done, and reports whether it waited all of d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
