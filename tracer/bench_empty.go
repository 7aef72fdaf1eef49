package tracer

import "os"

// benchEmptyEnv, like Options.EmptyBodies, makes the state, reset and timer-tracepoint
// programs return at once: make bench attaches them so, to measure what attaching the
// tracepoint backend costs by itself, the floor under twtrace's own work. Benchmarks only.
const benchEmptyEnv = "TWTRACE_BENCH_EMPTY"

func benchEmpty() bool { return os.Getenv(benchEmptyEnv) != "" }

// Emptied says whether EmptyBodies empties the programs of backend b: only the bodies
// the tracepoint programs share (state, reset, timer) read cfg_empty.
func Emptied(b Backend) bool { return b == BackendTracepoint }
