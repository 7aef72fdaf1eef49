package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
)

// errOffline: a recording holds events, not the kernel's tables.
var errOffline = errors.New("not available offline")

// offlineSource stands for the kernel when replaying a recording: it has nothing live.
type offlineSource struct{}

func (offlineSource) Take(uint32) (*snapshot.Namespace, error) { return nil, errOffline }

// tracingOnly refuses, next to --input, the flags that only tracing uses.
func tracingOnly(fs *flag.FlagSet, names ...string) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		for _, n := range names {
			if f.Name == n && err == nil {
				err = usagef("--%s: --input replays a recording and does not trace", n)
			}
		}
	})
	return err
}

// replayWindow folds a recording (a file, or standard input for "-") into a window, the
// events the filter keeps only, and says what the recording said about itself.
func replayWindow(name string, stdin io.Reader, filter replayFilter) (*window.Aggregate, recording, error) {
	r, err := openRecording(name, stdin)
	if err != nil {
		return nil, recording{}, err
	}
	defer r.Close()
	win := window.New(time.Time{}, nil)
	rec, err := replay(r, name, filter, win.Add)
	if err != nil {
		return nil, rec, err
	}
	a := win.Copy()
	a.Since = rec.Since
	return a, rec, nil
}

// recordingStatus is the trace status a recording reports.
func recordingStatus(rec recording) traceStatus {
	st := traceStatus{Lost: rec.Lost, Missed: rec.Missed, Offline: true, Input: rec.Name,
		Unreadable: rec.Unreadable, NoEnd: !rec.HasEnd}
	st.Traced, st.NotTraced = notTraced(rec.Traced, rec.Missing)
	if !rec.HasStart { // which families were traced is not known: those without events are unknown
		for f, why := range st.NotTraced {
			if why == "not selected (--events)" {
				st.NotTraced[f] = "unknown: the recording has no start record"
			}
		}
	}
	return st
}

// reportReplay says on stderr what was replayed and what could not be read.
func reportReplay(w io.Writer, rec recording) {
	fmt.Fprintf(w, "twtrace: replayed %d events from %s", rec.Events, rec.Name)
	if rec.Unreadable > 0 {
		fmt.Fprintf(w, "; %d unreadable lines skipped (first: %s)", rec.Unreadable, oneLine(rec.FirstError))
	}
	if !rec.HasStart {
		fmt.Fprintf(w, "; no start record (families without events are unknown)")
	}
	if !rec.HasEnd {
		fmt.Fprintf(w, "; no end record (cut short: loss unknown)")
	}
	fmt.Fprintln(w)
}

// recordingNamespace is the namespace a replay reports: the one the user filters on, or
// the one the recording was made for.
func recordingNamespace(filter tracer.Filter, rec recording) uint32 {
	if filter.NetNS != 0 {
		return filter.NetNS
	}
	return rec.NetNS
}
