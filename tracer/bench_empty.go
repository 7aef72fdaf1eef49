package tracer

import "os"

// benchEmptyEnv makes the state, reset and timer-tracepoint programs return at once:
// make bench attaches them so, to measure what attaching the tracepoint backend costs by
// itself, the floor under twtrace's own work. Benchmarks only.
const benchEmptyEnv = "TWTRACE_BENCH_EMPTY"

func benchEmpty() bool { return os.Getenv(benchEmptyEnv) != "" }
