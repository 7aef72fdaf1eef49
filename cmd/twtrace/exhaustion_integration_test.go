package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// exhaustPorts, in the calling thread's fresh namespace, fills a 10-port range with
// TIME_WAIT sockets towards 127.0.0.1:5000 (tcp_tw_reuse off, timestamps on), then tries
// to connect tries more times and returns how many failed with EADDRNOTAVAIL.
func exhaustPorts(t *testing.T, tries int) int {
	t.Helper()
	for name, v := range map[string]string{"ip_local_port_range": "40000 40009", "tcp_tw_reuse": "0", "tcp_timestamps": "1"} {
		must(t, os.WriteFile("/proc/sys/net/ipv4/"+name, []byte(v), 0o644))
	}
	clientFirst(t, 5000, 10)
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0) // the listener again: a refused connect is not the point
	must(t, err)
	t.Cleanup(func() { unix.Close(ln) })
	must(t, unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
	must(t, unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 5000}))
	must(t, unix.Listen(ln, 64))
	failed := 0
	for i := 0; i < tries; i++ {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		must(t, err)
		err = unix.Connect(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 5000})
		unix.Close(c)
		if !errors.Is(err, unix.EADDRNOTAVAIL) {
			t.Fatalf("connect %d with every port in TIME_WAIT: %v, want EADDRNOTAVAIL", i, err)
		}
		failed++
	}
	return failed
}

// demoUnit is the systemd unit the connect tests' failures come from.
const demoUnit = "/system.slice/demo.service"

// doctor --duration in a namespace whose ports ran out reports ephemeral_ports_exhausted,
// critical, with the failures it counted, the workload that called connect(), the TIME_WAIT
// sockets holding the ports and the settings that decide what frees them.
func TestDoctorPortsExhausted(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	cg := newTestCgroups(t, demoUnit)
	var stdout *bytes.Buffer
	var failed int
	inNetns(t, func(inode uint64) {
		cmd, out, stderr := startTwtrace(t, "doctor", "-o", "json", "--duration", "3s", "--backend", *testBackend, "--netns", fmt.Sprint(inode))
		stdout = out
		cg.in(t, demoUnit, func() { failed = exhaustPorts(t, 5) })
		<-stderr.eof
		if err := cmd.Wait(); err != nil {
			t.Fatalf("twtrace doctor: %v\n%s", err, stderr.String())
		}
	})
	var r struct {
		Namespaces []struct {
			Traced struct {
				ConnectFailures map[string]uint64 `json:"connect_failures"`
				Reused          *uint64           `json:"reused"`
				Workloads       []workloadJSON    `json:"workloads"`
			} `json:"traced"`
			Findings []struct {
				ID       string `json:"id"`
				Severity string `json:"severity"`
				Evidence string `json:"evidence"`
				Advice   string `json:"advice"`
			} `json:"findings"`
		} `json:"namespaces"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil || len(r.Namespaces) != 1 {
		t.Fatalf("doctor -o json: %v\n%s", err, stdout.String())
	}
	n := r.Namespaces[0]
	if f := n.Traced.ConnectFailures; len(f) != 1 || f["EADDRNOTAVAIL"] != uint64(failed) || n.Traced.Reused == nil || *n.Traced.Reused != 0 {
		t.Errorf("traced: connect failures %v, reused %v; want EADDRNOTAVAIL %d, reused 0", f, n.Traced.Reused, failed)
	}
	if w := n.Traced.Workloads; len(w) != 1 || w[0].Workload == nil || w[0].Workload.Name != "demo.service" ||
		len(w[0].ConnectFailures) != 1 || w[0].ConnectFailures["EADDRNOTAVAIL"] != uint64(failed) {
		t.Errorf("workloads %+v, want demo.service alone with its %d EADDRNOTAVAIL:\n%s", w, failed, stdout.String())
	}
	for _, f := range n.Findings {
		if f.ID != "ephemeral_ports_exhausted" {
			continue
		}
		if f.Severity != "critical" || n.Findings[0].ID != f.ID {
			t.Errorf("ephemeral_ports_exhausted is %s, want critical and first", f.Severity)
		}
		for _, want := range []string{fmt.Sprintf("%d connect() calls failed with EADDRNOTAVAIL", failed),
			fmt.Sprintf("%d towards 127.0.0.1:5000 from 127.0.0.1", failed), "10 sockets in TIME_WAIT towards it now",
			fmt.Sprintf("reused 0, failed %d", failed), "ip_local_port_range 40000-40009, 10 ports", "tcp_tw_reuse = 0", "tcp_timestamps = 1",
			fmt.Sprintf("called by demo.service %d", failed)} {
			if !strings.Contains(f.Evidence, want) {
				t.Errorf("evidence %q lacks %q", f.Evidence, want)
			}
		}
		if !strings.Contains(f.Advice, "set net.ipv4.tcp_tw_reuse = 1") || !strings.Contains(f.Advice, "Myths") {
			t.Errorf("advice %q", f.Advice)
		}
		return
	}
	t.Errorf("no ephemeral_ports_exhausted finding:\n%s", stdout.String())
}

// The timewait view shows, per destination, the connect() calls that failed and, once
// tcp_tw_reuse lets connect() take the timewait sockets over, the reuses: "reused N,
// failed M", the destination listed though no TIME_WAIT socket is left towards it.
func TestTimewaitViewReusedAndFailed(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	var stdout *bytes.Buffer
	var failed int
	inNetns(t, func(inode uint64) {
		var cmd *exec.Cmd
		var stderr *stderrWatch
		cmd, stdout, stderr = startTwtrace(t, "timewait", "-o", "json", "--backend", *testBackend, "--netns", fmt.Sprint(inode))
		failed = exhaustPorts(t, 3)
		must(t, os.WriteFile("/proc/sys/net/ipv4/tcp_tw_reuse", []byte("1"), 0o644))
		delay := 1100 * time.Millisecond // before tcp_tw_reuse_delay: reuse after a full second
		if os.WriteFile("/proc/sys/net/ipv4/tcp_tw_reuse_delay", []byte("1"), 0o644) == nil {
			delay = 10 * time.Millisecond
		}
		time.Sleep(delay) // the kernel's reuse rule, not a wait for events
		for i := 0; i < 10; i++ {
			c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			must(t, err)
			defer unix.Close(c)
			must(t, unix.Connect(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 5000}))
		}
		time.Sleep(300 * time.Millisecond) // the ten deaths by reuse are in flight from the ring buffer
		stopTwtrace(t, cmd, stderr)
	})
	var v struct {
		Destinations []struct {
			DAddr    string            `json:"daddr"`
			DPort    uint16            `json:"dport"`
			Live     int               `json:"live"`
			Failures map[string]uint64 `json:"connect_failures"`
			Reused   *uint64           `json:"reused"`
		} `json:"destinations"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
		t.Fatalf("timewait -o json: %v\n%s", err, stdout.String())
	}
	if len(v.Destinations) != 1 {
		t.Fatalf("want the one destination:\n%s", stdout.String())
	}
	d := v.Destinations[0]
	if d.DAddr != "127.0.0.1" || d.DPort != 5000 || d.Live != 0 || len(d.Failures) != 1 || d.Failures["EADDRNOTAVAIL"] != uint64(failed) ||
		d.Reused == nil || *d.Reused != 10 {
		t.Errorf("want 127.0.0.1:5000, no TIME_WAIT left, reused 10, failed %d (EADDRNOTAVAIL):\n%s", failed, stdout.String())
	}
}

// serve counts the failures by namespace, errno and the workload that called connect()
// (a new workload's own series from the fold after it joins the top K: until then in
// other), and by destination.
func TestServeConnectFailures(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	cg := newTestCgroups(t, demoUnit)
	inNetns(t, func(inode uint64) {
		holder := exec.Command("sleep", "600") // the namespace stays reachable through /proc
		must(t, holder.Start())
		defer holder.Process.Kill()
		type started struct {
			cmd    *exec.Cmd
			stderr *stderrWatch
		}
		outside := make(chan started)
		go func() { // another thread: serve runs in the host namespace, its scrapes outside ours
			cmd, _, stderr := startTwtrace(t, "serve", "--listen", "127.0.0.1:0", "--backend", *testBackend, "--netns", fmt.Sprint(inode))
			outside <- started{cmd, stderr}
		}()
		s := <-outside
		defer stopTwtrace(t, s.cmd, s.stderr)
		if !s.stderr.waitFor("serving", 30*time.Second) {
			t.Fatalf("serve did not start:\n%s", s.stderr.String())
		}
		addr := regexp.MustCompile(`listen=(\S+)`).FindStringSubmatch(s.stderr.String())
		if addr == nil {
			t.Fatalf("no listen address in:\n%s", s.stderr.String())
		}
		ns := fmt.Sprintf(`netns="%d"`, inode)
		series := func(errno, unit string) string {
			return `twtrace_connect_failures_total{errno="` + errno + `",namespace="",` + ns + `,pod="",unit="` + unit + `"}`
		}
		before, body := scrape(t, addr[1])
		for _, unit := range []string{"other", "unknown"} {
			if v, ok := before[series("EADDRNOTAVAIL", unit)]; !ok || v != 0 {
				t.Fatalf("the EADDRNOTAVAIL series of %s must exist at 0 before any failure:\n%s", unit, body)
			}
		}
		var failed int
		cg.in(t, demoUnit, func() { failed = exhaustPorts(t, 4) })
		other, own := series("EADDRNOTAVAIL", "other"), series("EADDRNOTAVAIL", "demo.service")
		dest := `twtrace_connect_failures_by_destination_total{daddr="127.0.0.1",dport="5000",errno="EADDRNOTAVAIL",namespace="",` + ns + `,pod="",saddr="127.0.0.1",unit=""}`
		wait := func(what string, done func(m map[string]float64) bool) map[string]float64 {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for {
				m, body := scrape(t, addr[1])
				if done(m) {
					return m
				}
				if time.Now().After(deadline) {
					t.Fatalf("want %s:\n%s", what, body)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		m := wait(fmt.Sprintf("%s and %s = %d", other, dest, failed), func(m map[string]float64) bool {
			return m[other] == float64(failed) && m[dest] == float64(failed)
		})
		if n, _ := sum(m, "twtrace_connect_failures_total{"); n != float64(failed) {
			t.Errorf("%v failures in all, want only the %d EADDRNOTAVAIL", n, failed)
		}
		// demo.service joined the top K with that fold: its next failure counts in its own series
		cg.in(t, demoUnit, func() {
			c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			must(t, err)
			defer unix.Close(c)
			if err := unix.Connect(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 5000}); !errors.Is(err, unix.EADDRNOTAVAIL) {
				t.Fatalf("connect with every port in TIME_WAIT: %v, want EADDRNOTAVAIL", err)
			}
		})
		wait(own+" = 1", func(m map[string]float64) bool {
			return m[own] == 1 && m[other] == float64(failed) && m[dest] == float64(failed+1)
		})
	})
}
