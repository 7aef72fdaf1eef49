package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/twtrace/twtrace/internal/testnet"
)

// -backend forces the backend the end-to-end tests pass to --backend; the kernel
// matrix runs them once per backend.
var testBackend = flag.String("backend", "auto", "backend for the end-to-end tests")

var twtraceBin string

func TestMain(m *testing.M) {
	testnet.RunChild()
	flag.Parse()
	code := func() int {
		if os.Geteuid() != 0 || os.Getenv("TWTRACE_UNIT_ONLY") != "" {
			return m.Run() // the end-to-end tests skip without a binary
		}
		bin, cleanup, err := binary()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer cleanup()
		twtraceBin = bin
		if *testBackend != "auto" {
			out, err := exec.Command(bin, "probe", "--backend", *testBackend).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); ok && (ee.ExitCode() == 3 || ee.ExitCode() == 4) {
				fmt.Printf("backend %s: not available (exit %d):\n%s", *testBackend, ee.ExitCode(), out)
				return ee.ExitCode()
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// binary returns the twtrace binary under test: $TWTRACE_BIN (make test, the VMs), or a fresh build.
func binary() (string, func(), error) {
	if bin := os.Getenv("TWTRACE_BIN"); bin != "" {
		return bin, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "twtrace-e2e")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "twtrace")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("build twtrace: %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}
