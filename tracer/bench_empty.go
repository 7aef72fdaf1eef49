package tracer

import "os"

// benchEmptyEnv makes every tracing program return at once: make bench attaches them so,
// to measure what attaching costs by itself, the floor under twtrace's own work.
// Benchmarks only; twtrace traces nothing while it is set.
const benchEmptyEnv = "TWTRACE_BENCH_EMPTY"

func benchEmpty() bool { return os.Getenv(benchEmptyEnv) != "" }
