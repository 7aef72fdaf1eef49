package main

import (
	"io"

	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
)

// reconciledSession is a session of watch, timewait or serve with what reconciliation needs
// around it: the workload names (whose --cgroup, --pod or --container filter is set into
// the tracer's options), the snapshot source of the traced namespaces, and the kernel's
// counters read before tracing starts.
type reconciledSession struct {
	*session
	names    *workloads
	src      *snapshot.Source
	baseline map[uint32]snapshot.Counters
}

func startReconciledSession(f *traceFlags, opts *tracer.Options, stderr io.Writer) (*reconciledSession, error) {
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return nil, err
	}
	names, cgroupFilter, err := f.workload.open(log)
	if err != nil {
		return nil, err
	}
	opts.Filter.Cgroup = cgroupFilter
	src := snapshot.NewSource(snapshot.Options{Keep: window.Keep(opts.Filter), TimeWaitSockets: true})
	baseline := src.Baselines(filteredNamespace(opts.Filter))
	sess, err := startSession(f, *opts, stderr)
	if err != nil {
		names.Close()
		return nil, err
	}
	return &reconciledSession{session: sess, names: names, src: src, baseline: baseline}, nil
}

func (s *reconciledSession) Close() {
	s.session.Close()
	s.names.Close()
}
