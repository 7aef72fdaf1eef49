// Command twbench measures twtrace against the kernel it runs on: overhead under
// connection churn next to libbpf-tools tcpstates (twbench overhead, make bench), and
// bounded memory over a long run (twbench soak, make soak). It writes its tables into
// BENCHMARKS.md and prints them.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"time"
)

type config struct {
	twtrace, churn, tcpstates string
	out                       string
	rounds, clients           int
	duration                  time.Duration
	soak                      time.Duration
	sampleEvery               time.Duration
	cpus                      string // taskset CPU list for churn, "" for any
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "twbench: %s\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || (args[0] != "overhead" && args[0] != "soak" && args[0] != "compare") {
		return fmt.Errorf("usage: twbench overhead|soak|compare [flags]")
	}
	if args[0] == "compare" {
		return compare(args[1:])
	}
	fs := flag.NewFlagSet("twbench "+args[0], flag.ContinueOnError)
	var cfg config
	fs.StringVar(&cfg.twtrace, "twtrace", "bin/twtrace", "the twtrace binary")
	fs.StringVar(&cfg.churn, "churn", "bin/churn", "the churn binary")
	fs.StringVar(&cfg.tcpstates, "tcpstates", "tcpstates", "libbpf-tools tcpstates (Debian: libbpf-tools)")
	fs.StringVar(&cfg.out, "out", "BENCHMARKS.md", "file whose section this run replaces")
	fs.IntVar(&cfg.rounds, "rounds", 5, "interleaved rounds per close order")
	fs.IntVar(&cfg.clients, "clients", 8, "churn clients")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "churn per measurement")
	fs.DurationVar(&cfg.soak, "soak", 10*time.Minute, "soak length")
	fs.DurationVar(&cfg.sampleEvery, "sample", 10*time.Second, "soak sampling interval")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: it loads BPF programs and churns in a private network namespace")
	}
	for _, bin := range []*string{&cfg.twtrace, &cfg.churn} {
		if _, err := os.Stat(*bin); err != nil {
			return fmt.Errorf("%s: %w (run make build, or make bench)", *bin, err)
		}
	}
	if args[0] == "soak" {
		return soak(cfg)
	}
	path, err := exec.LookPath(cfg.tcpstates)
	if err != nil {
		return fmt.Errorf("tcpstates not found (apt-get install libbpf-tools): %w", err)
	}
	cfg.tcpstates = path
	if err := mountTracefs(); err != nil {
		return err
	}
	return overhead(cfg)
}
