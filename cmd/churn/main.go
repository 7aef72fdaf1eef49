// Command churn is twtrace's benchmark workload: N concurrent clients doing
// connect/write/close against a loopback server, for a fixed time, in a private
// network namespace. It reports connections per second.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/twtrace/twtrace/internal/churn"
	"github.com/twtrace/twtrace/internal/loopback"
)

// inNetnsEnv marks the re-executed child that already runs in the private namespace.
const inNetnsEnv = "CHURN_IN_PRIVATE_NETNS"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "churn: %s\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("churn", flag.ContinueOnError)
	cfg := churn.Config{}
	fs.IntVar(&cfg.Clients, "clients", 4, "concurrent clients (and as many server workers)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to churn")
	fs.StringVar(&cfg.CloseFirst, "close", "client", "who closes first, and so holds the TIME_WAIT socket: client or server; abort: the client resets, no TIME_WAIT")
	fs.IntVar(&cfg.Family, "family", 4, "4 (127.0.0.1) or 6 (::1)")
	fs.IntVar(&cfg.Payload, "payload", 64, "bytes the client writes per connection")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	hostNetns := fs.Bool("host-netns", false, "churn in the current network namespace instead of a private one")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if !*hostNetns && os.Getenv(inNetnsEnv) == "" {
		return reexecInPrivateNetns(args, stdout)
	}
	if !*hostNetns {
		if err := loopback.Up(); err != nil {
			return err
		}
	}
	res, err := churn.Run(cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	fmt.Fprintf(stdout, "%d connections in %.2f s: %.0f connections/s (%s closes first, %d clients, IPv%d, netns %d)\n",
		res.Connections, res.Seconds, res.PerSecond, res.CloseFirst, res.Clients, res.Family, res.NetnsInode)
	for e, n := range res.Errors {
		fmt.Fprintf(stdout, "  %d × %s\n", n, e)
	}

	return nil
}

// reexecInPrivateNetns runs this command again in a new network namespace: every Go
// thread of the child is born there, which unshare(2) on one thread cannot promise.
func reexecInPrivateNetns(args []string, stdout io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("a private network namespace needs root (or run with -host-netns)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	cmd.Stdout, cmd.Stderr = stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		return err
	}
	return nil
}
