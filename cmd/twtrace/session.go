package main

import (
	"context"
	"errors"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/twtrace/twtrace/tracer"
)

// session is a started tracer and the context that ends it: SIGINT, SIGTERM or --duration.
type session struct {
	t      *tracer.Tracer
	ctx    context.Context
	cancel func()
	log    zerolog.Logger
	// stats holds the kernel's run-time statistics on (--bpf-stats), nil when off
	stats   io.Closer
	started time.Time
}

// startSession checks privileges, installs the signal handlers before loading (so an
// interrupt at any moment is handled), starts the tracer and says it is tracing.
func startSession(f *traceFlags, opts tracer.Options, stderr io.Writer) (*session, error) {
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return nil, err
	}
	if err := tracer.CheckPrivilegesFor(opts.Families); err != nil {
		return nil, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	cancel := stop
	var stats io.Closer
	if f.bpfStats { // before loading: a program's first runs are counted too
		if stats, err = tracer.EnableRunTimeStats(); err != nil {
			cancel()
			return nil, err
		}
	}
	t, err := tracer.New(opts)
	if err != nil {
		cancel()
		if stats != nil {
			stats.Close()
		}
	}
	if errors.Is(err, tracer.ErrUnavailable) || errors.Is(err, tracer.ErrNotImplemented) {
		return nil, errUnavailable{err} // exit 3 (4): this kernel (twtrace) cannot do what was asked
	}
	if err != nil {
		return nil, err
	}
	if f.duration > 0 { // the window starts once tracing does, however long loading took
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeout(ctx, f.duration)
		cancel = func() { cancelTimeout(); stop() }
	}
	for _, m := range t.Unavailable() {
		log.Warn().Msgf("event family %s unavailable: %s", m.Family, m.Reason)
	}
	ready := log.Info()
	for _, c := range t.Choices() {
		ready = ready.Str(string(c.Hook), backendName(c.Backend))
	}
	ready.Msg("tracing")
	return &session{t: t, ctx: ctx, cancel: cancel, log: log, stats: stats, started: time.Now()}, nil
}

// Close detaches everything, releases the signal handlers and turns the kernel's
// statistics off again (unless something else holds them on).
func (s *session) Close() {
	s.t.Close()
	s.cancel()
	if s.stats != nil {
		s.stats.Close()
	}
}

// backendName is a hook's backend, "none" when no backend could serve it.
func backendName(b tracer.Backend) string {
	if b == "" {
		return "none"
	}
	return string(b)
}
