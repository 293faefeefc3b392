package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
)

// call is one request: its id, its logger and its operation name. Every
// method starts one, so that each log line and error of a request carries
// the same id.
type call struct {
	ctx   context.Context
	log   *slog.Logger
	id    string
	op    string
	start time.Time
}

// begin starts a call of method on subject (a resource URI, an image
// reference; "" for none), which errors name; attrs (never secrets) go on
// every log line.
func begin(ctx context.Context, log *slog.Logger, method, subject string, attrs ...any) *call {
	id := newID()
	op := method
	if subject != "" {
		op += " " + subject
		attrs = append([]any{"subject", subject}, attrs...)
	}
	c := &call{ctx: ctx, id: id, op: op, start: time.Now(),
		log: log.With(append([]any{"rpc", method, "request_id", id}, attrs...)...)}
	c.log.Debug("request")
	return c
}

// newID returns a random request id, 16 hex digits.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail
	return hex.EncodeToString(b[:])
}

// ok logs the call's success.
func (c *call) ok(attrs ...any) {
	c.log.Info("ok", append([]any{"duration", time.Since(c.start).Round(time.Millisecond)}, attrs...)...)
}

// fail returns err as an *Error of the call, coded by Classify (or by the
// caller's context when it has ended), and logs it.
func (c *call) fail(err error) error {
	code := Classify(err)
	switch c.ctx.Err() {
	case context.Canceled:
		code = codes.Canceled
	case context.DeadlineExceeded:
		code = codes.DeadlineExceeded
	}
	return c.failCode(code, err)
}

// failf is fail for a cause the service itself states, with an explicit
// code.
func (c *call) failf(code codes.Code, format string, args ...any) error {
	return c.failCode(code, fmt.Errorf(format, args...))
}

func (c *call) failCode(code codes.Code, err error) error {
	e := &Error{Code: code, Op: c.op, ID: c.id, Err: err}
	level := slog.LevelWarn
	if code == codes.Internal || code == codes.Unknown {
		level = slog.LevelError
	}
	c.log.Log(c.ctx, level, "failed", "code", code.String(), "duration", time.Since(c.start).Round(time.Millisecond), "err", err)
	return e
}
