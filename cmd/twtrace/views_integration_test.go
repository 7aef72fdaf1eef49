package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startTwtrace runs the binary with args from the current thread's namespace and waits
// until it says it is tracing.
func startTwtrace(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer, *stderrWatch) {
	t.Helper()
	var stdout bytes.Buffer
	cmd := exec.Command(twtraceBin, args...)
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	must(t, err)
	stderr := watchStderr(pipe)
	must(t, cmd.Start())
	if !stderr.waitFor(" tracing ", 60*time.Second) {
		cmd.Process.Kill()
		t.Fatalf("twtrace never said it was tracing:\n%s", stderr.String())
	}
	return cmd, &stdout, stderr
}

// stopTwtrace interrupts it, as a user would, and waits for its output.
func stopTwtrace(t *testing.T, cmd *exec.Cmd, stderr *stderrWatch) {
	t.Helper()
	must(t, cmd.Process.Signal(os.Interrupt))
	<-stderr.eof
	if err := cmd.Wait(); err != nil {
		t.Fatalf("twtrace: %v\n%s", err, stderr.String())
	}
}

// clientFirst makes n IPv4 loopback connections to a listener on port (0: any) whose
// client closes first.
func clientFirst(t *testing.T, port, n int) {
	t.Helper()
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	must(t, err)
	defer unix.Close(ln)
	must(t, unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}))
	must(t, unix.Listen(ln, 64))
	sa, _ := unix.Getsockname(ln)
	port = sa.(*unix.SockaddrInet4).Port
	for i := 0; i < n; i++ {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		must(t, err)
		must(t, unix.Connect(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}))
		a, _, err := unix.Accept(ln)
		must(t, err)
		unix.Close(c)
		unix.Read(a, make([]byte, 1))
		unix.Close(a)
	}
}

// The timewait view's numbers equal the kernel's: live sockets (sock_diag), overflows
// (TcpExtTCPTimeWaitOverflow) and timewait sockets created.
func TestTimewaitViewMatchesKernel(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	var cmd *exec.Cmd
	var stdout *bytes.Buffer
	var stderr *stderrWatch
	inNetns(t, func(inode uint64) {
		must(t, os.WriteFile("/proc/sys/net/ipv4/tcp_max_tw_buckets", []byte("4"), 0o644))
		cmd, stdout, stderr = startTwtrace(t, "timewait", "-o", "json", "--backend", *testBackend, "--netns", fmt.Sprint(inode))
		clientFirst(t, 0, 20)
		stopTwtrace(t, cmd, stderr)
	})
	var v struct {
		Complete   bool `json:"complete"`
		Namespaces []struct {
			Live         *int64 `json:"live"`
			MaxTWBuckets *int64 `json:"max_tw_buckets"`
			Created      uint64 `json:"created"`
			Overflows    uint64 `json:"overflows"`
			CounterDelta *int64 `json:"overflow_counter_delta"`
		} `json:"namespaces"`
		Destinations []struct {
			Live   int  `json:"live"`
			AtRisk bool `json:"at_risk"`
		} `json:"destinations"`
		Overflows []struct {
			Count uint64 `json:"count"`
		} `json:"overflows"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
		t.Fatalf("timewait -o json: %v\n%s", err, stdout.String())
	}
	if len(v.Namespaces) != 1 {
		t.Fatalf("want the one namespace: %s", stdout.String())
	}
	n := v.Namespaces[0]
	if n.Live == nil || *n.Live != 4 || *n.MaxTWBuckets != 4 || n.Created != 4 || n.Overflows != 16 ||
		n.CounterDelta == nil || *n.CounterDelta != 16 {
		t.Errorf("want 4 live of 4 buckets, 4 created, 16 overflows = counter delta 16:\n%s", stdout.String())
	}
	if len(v.Destinations) != 1 || v.Destinations[0].Live != 4 || len(v.Overflows) != 1 || v.Overflows[0].Count != 16 {
		t.Errorf("want one destination with 4 live and 16 overflows:\n%s", stdout.String())
	}
	if !v.Complete {
		t.Errorf("view says it is incomplete:\n%s", stdout.String())
	}
}

// doctor reports the findings its sysctls and measured traffic call for, with the numbers.
func TestDoctorFindings(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	var stdout *bytes.Buffer
	inNetns(t, func(inode uint64) {
		for name, v := range map[string]string{"tcp_max_tw_buckets": "4", "ip_local_port_range": "40000 40009",
			"tcp_tw_reuse": "1", "tcp_timestamps": "0", "tcp_fin_timeout": "30"} {
			must(t, os.WriteFile("/proc/sys/net/ipv4/"+name, []byte(v), 0o644))
		}
		var cmd *exec.Cmd
		var stderr *stderrWatch
		cmd, stdout, stderr = startTwtrace(t, "doctor", "-o", "json", "--duration", "3s", "--backend", *testBackend, "--netns", fmt.Sprint(inode))
		clientFirst(t, 5000, 6) // 4 timewait sockets (the limit), 2 overflows
		<-stderr.eof
		if err := cmd.Wait(); err != nil {
			t.Fatalf("twtrace doctor: %v\n%s", err, stderr.String())
		}
	})
	var r struct {
		Namespaces []struct {
			Sysctls  map[string]string `json:"sysctls"`
			Findings []struct {
				ID       string `json:"id"`
				Severity string `json:"severity"`
				Evidence string `json:"evidence"`
			} `json:"findings"`
		} `json:"namespaces"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil || len(r.Namespaces) != 1 {
		t.Fatalf("doctor -o json: %v\n%s", err, stdout.String())
	}
	found := map[string]string{}
	for _, f := range r.Namespaces[0].Findings {
		found[f.ID] = f.Severity + ": " + f.Evidence
	}
	want := map[string][]string{
		"max_tw_buckets_reached":      {"critical: ", "2 overflows", "TcpExtTCPTimeWaitOverflow +2", "tcp_max_tw_buckets = 4", "peak 4 live"},
		"ephemeral_ports_pressure":    {"warning: ", "4 sockets from 127.0.0.1 to 127.0.0.1:5000", "40000-40009 (10 ports)"},
		"tw_reuse_without_timestamps": {"warning: "},
		"fin_timeout_not_time_wait":   {"info: ", "= 30 s"},
	}
	if _, ok := r.Namespaces[0].Sysctls["tcp_tw_recycle"]; !ok {
		want["tw_recycle_removed"] = []string{"info: ", "absent"}
	}
	for id, parts := range want {
		got, ok := found[id]
		if !ok {
			t.Errorf("no finding %s in:\n%s", id, stdout.String())
			continue
		}
		for _, p := range parts {
			if !strings.Contains(got, p) {
				t.Errorf("finding %s = %q, want it to contain %q", id, got, p)
			}
		}
	}
}

// timewait --dport N lists only destinations with port N: the socket filters apply to the
// live sockets as they apply to events in the kernel. The namespace's live count stays
// its whole timewait table, the one tcp_max_tw_buckets limits.
func TestTimewaitFiltersLiveSockets(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	var stdout *bytes.Buffer
	inNetns(t, func(inode uint64) {
		clientFirst(t, 5001, 3) // live before twtrace starts: only sock_diag sees them
		clientFirst(t, 5002, 2)
		var cmd *exec.Cmd
		var stderr *stderrWatch
		cmd, stdout, stderr = startTwtrace(t, "timewait", "-o", "json", "--backend", *testBackend,
			"--netns", fmt.Sprint(inode), "--dport", "5001")
		stopTwtrace(t, cmd, stderr)
	})
	var v struct {
		Namespaces []struct {
			Live *int64 `json:"live"`
		} `json:"namespaces"`
		Destinations []struct {
			DPort uint16 `json:"dport"`
			Live  int    `json:"live"`
		} `json:"destinations"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
		t.Fatalf("timewait -o json: %v\n%s", err, stdout.String())
	}
	if len(v.Destinations) != 1 || v.Destinations[0].DPort != 5001 || v.Destinations[0].Live != 3 {
		t.Errorf("want only the destination with port 5001, 3 live:\n%s", stdout.String())
	}
	if len(v.Namespaces) != 1 || v.Namespaces[0].Live == nil || *v.Namespaces[0].Live != 5 {
		t.Errorf("want the namespace's whole timewait table, 5 live:\n%s", stdout.String())
	}
}
