package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// scrape fetches /metrics and returns each sample line's value by its series.
func scrape(t *testing.T, addr string) (map[string]float64, []byte) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		must(t, err)
		out[line[:i]] = v
	}
	return out, body
}

// sumWhere adds up the series of metric name that have every label pair given (`netns="7"`),
// whatever their other labels.
func sumWhere(m map[string]float64, name string, pairs ...string) (total float64, series int) {
	for k, v := range m {
		labels, ok := strings.CutPrefix(k, name+"{")
		if !ok && k != name {
			continue
		}
		matches := true
		for _, p := range pairs {
			if !strings.Contains(","+labels, ","+p) {
				matches = false
			}
		}
		if matches {
			total += v
			series++
		}
	}
	return total, series
}

func sum(m map[string]float64, prefix string) (total float64, series int) {
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			total += v
			series++
		}
	}
	return total, series
}

// serve exports exactly what the kernel did, keeps per-destination series to the top K,
// and its output passes promtool.
func TestServeMetricsMatchKernel(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	inNetns(t, func(inode uint64) {
		must(t, os.WriteFile("/proc/sys/net/ipv4/tcp_max_tw_buckets", []byte("4"), 0o644))
		// a process in the namespace makes it visible as /proc/PID/ns/net; serve itself runs
		// outside, so that its own connections (the scrapes) do not count in the namespace
		holder := exec.Command("sleep", "600")
		must(t, holder.Start())
		defer holder.Process.Kill()
		type started struct {
			cmd    *exec.Cmd
			stderr *stderrWatch
		}
		outside := make(chan started)
		go func() { // another goroutine, so another thread: the host namespace
			cmd, _, stderr := startTwtrace(t, "serve", "--listen", "127.0.0.1:0", "--top", "2",
				"--backend", *testBackend, "--netns", fmt.Sprint(inode))
			outside <- started{cmd, stderr}
		}()
		s := <-outside
		cmd, stderr := s.cmd, s.stderr
		defer stopTwtrace(t, cmd, stderr)
		if !stderr.waitFor("serving", 30*time.Second) {
			t.Fatalf("serve did not start:\n%s", stderr.String())
		}
		addr := regexp.MustCompile(`listen=(\S+)`).FindStringSubmatch(stderr.String())
		if addr == nil {
			t.Fatalf("no listen address in:\n%s", stderr.String())
		}
		ns := fmt.Sprintf(`netns="%d"`, inode)

		killedBySYN(t) // one timewait socket born and killed: one lifetime observed
		clientFirst(t, 0, 1)
		clientFirst(t, 0, 1)
		clientFirst(t, 5555, 2)  // 4 live timewait sockets, 3 destinations
		clientFirst(t, 5555, 16) // the table is full: 16 overflows

		var m map[string]float64
		var body []byte
		deadline := time.Now().Add(20 * time.Second)
		for {
			m, body = scrape(t, addr[1])
			created, _ := sumWhere(m, "twtrace_timewait_created_total", ns)
			if overflows, _ := sumWhere(m, "twtrace_timewait_overflow_total", ns); created == 5 && overflows == 16 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("counters never reached 5 created, 16 overflows:\n%s", body)
			}
			time.Sleep(50 * time.Millisecond) // events are in flight from the ring buffer
		}
		want := map[string]float64{
			"twtrace_timewait_sockets":     4,
			"twtrace_timewait_max_buckets": 4,
			"twtrace_events_lost_total":    0,
		}
		for k, v := range want {
			pairs := []string{ns}
			if k == "twtrace_events_lost_total" {
				pairs = nil
			}
			if got, series := sumWhere(m, k, pairs...); got != v || series != 1 {
				t.Errorf("%s = %v in %d series, want %v in one", k, got, series, v)
			}
		}
		if n, _ := sum(m, `twtrace_timewait_lifetime_seconds_count{`); n != 1 {
			t.Errorf("lifetime histogram counts %v observations, want 1:\n%s", n, body)
		}
		if live, series := sum(m, "twtrace_timewait_destination_sockets{"); series != 2 || live != 3 {
			t.Errorf("%d destination series holding %v sockets, want the top 2 holding 3 (2+1):\n%s", series, live, body)
		}
		if handoffs, _ := sum(m, `twtrace_tcp_state_transitions_total{from="FIN_WAIT2",to="TIME_WAIT"}`); handoffs < 4 {
			t.Errorf("%v FIN_WAIT2->TIME_WAIT transitions, want at least the 4 client hand-offs", handoffs)
		}
		if promtool, err := exec.LookPath("promtool"); err == nil {
			check := exec.Command(promtool, "check", "metrics")
			check.Stdin = bytes.NewReader(body)
			if out, err := check.CombinedOutput(); err != nil {
				t.Errorf("promtool check metrics: %v\n%s", err, out)
			}
		} else {
			t.Log("promtool not installed: metrics lint skipped (make test installs it)")
		}
		resp, err := http.Post("http://"+addr[1]+"/metrics", "text/plain", nil)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST /metrics: %s, want 405", resp.Status)
		}
		resp, err = http.Get("http://" + addr[1] + "/healthz")
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("/healthz: %s", resp.Status)
		}
	})
}

// killedBySYN makes a server-closes-first connection, then reconnects from the same
// port: the SYN kills the server's timewait socket.
func killedBySYN(t *testing.T) {
	t.Helper()
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	must(t, err)
	defer unix.Close(ln)
	must(t, unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	must(t, unix.Listen(ln, 8))
	sa, _ := unix.Getsockname(ln)
	dst := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: sa.(*unix.SockaddrInet4).Port}
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	must(t, err)
	must(t, unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
	must(t, unix.Connect(c, dst))
	local, _ := unix.Getsockname(c)
	a, _, err := unix.Accept(ln)
	must(t, err)
	unix.Close(a) // server first: its socket goes to TIME_WAIT
	unix.Read(c, make([]byte, 1))
	unix.Close(c)
	again, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	must(t, err)
	defer unix.Close(again)
	must(t, unix.SetsockoptInt(again, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
	must(t, unix.Bind(again, local))
	must(t, unix.Connect(again, dst))
	if b, _, err := unix.Accept(ln); err == nil {
		// aborted, so this connection leaves no timewait socket behind
		must(t, unix.SetsockoptLinger(b, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}))
		unix.Close(b)
	}
}
