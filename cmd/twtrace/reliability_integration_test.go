package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// heldNetns is a network namespace kept alive by a file descriptor, so that twtrace can
// run outside it (its scrapes do not count there) and its sockets outlive the threads
// that made them.
type heldNetns struct {
	inode uint64
	fd    int
}

func newHeldNetns(t *testing.T) *heldNetns {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2 or busybox) to bring up loopback")
	}
	ns := &heldNetns{fd: -1}
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine, leaving the namespace to fd
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return err
			}
			if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
				return fmt.Errorf("ip link set lo up: %v %s", err, out)
			}
			fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				unix.Close(fd)
				return err
			}
			ns.fd, ns.inode = fd, st.Ino
			return nil
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() { unix.Close(ns.fd) })
	return ns
}

// run calls f on a thread inside the namespace; f must not call t.Fatal.
func (ns *heldNetns) run(f func() error) error {
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// churn makes n loopback connections in the namespace whose client closes first, through
// one listener: 10 state transitions each, and the listener's 2.
func (ns *heldNetns) churn(n int) error {
	return ns.run(func() error {
		ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(ln)
		if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if err := unix.Listen(ln, 64); err != nil {
			return err
		}
		sa, _ := unix.Getsockname(ln)
		to := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: sa.(*unix.SockaddrInet4).Port}
		for i := 0; i < n; i++ {
			c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			if err != nil {
				return err
			}
			if err := unix.Connect(c, to); err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			a, _, err := unix.Accept(ln)
			if err != nil {
				return err
			}
			unix.Close(c)
			if _, err := unix.Read(a, make([]byte, 1)); err != nil { // the client's FIN
				return err
			}
			unix.Close(a)
		}
		return nil
	})
}

// twtraceRun is the binary running with its stdout kept and its stderr watched.
type twtraceRun struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr *stderrWatch
}

// startTracing starts the binary with extra environment and waits for its tracing line.
func startTracing(t *testing.T, env []string, args ...string) *twtraceRun {
	t.Helper()
	r := &twtraceRun{cmd: exec.Command(twtraceBin, args...)}
	r.cmd.Env = append(os.Environ(), env...)
	r.cmd.Stdout = &r.stdout
	pipe, err := r.cmd.StderrPipe()
	must(t, err)
	r.stderr = watchStderr(pipe)
	must(t, r.cmd.Start())
	t.Cleanup(func() { r.cmd.Process.Kill() }) // a no-op once it has exited
	if !r.stderr.waitFor(" tracing ", 60*time.Second) {
		t.Fatalf("twtrace %s never said it was tracing:\n%s", strings.Join(args, " "), r.stderr.String())
	}
	return r
}

// stop interrupts it as a user would and waits for it to exit.
func (r *twtraceRun) stop(t *testing.T) {
	t.Helper()
	must(t, r.cmd.Process.Signal(os.Interrupt))
	<-r.stderr.eof
	if err := r.cmd.Wait(); err != nil {
		t.Fatalf("twtrace: %v\n%s", err, r.stderr.String())
	}
}

// waitStopped polls until the kernel reports the process stopped (SIGSTOP delivered).
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		must(t, err)
		// pid (comm) state ...: the state follows the last ')'
		if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] == "T" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("twtrace not stopped 5 s after SIGSTOP: %s", stat)
		}
		time.Sleep(time.Millisecond)
	}
}

// summaryRe matches the exit summary's counters.
var summaryRe = regexp.MustCompile(`twtrace: (\d+) events \(of (\d+) the kernel wrote\), (\d+) lost \[([\d ]*)\]`)

type summaryCounts struct{ decoded, emitted, lost, lostPerCPU uint64 }

func parseSummary(t *testing.T, stderr string) summaryCounts {
	t.Helper()
	m := summaryRe.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no summary in:\n%s", stderr)
	}
	var s summaryCounts
	s.decoded, _ = strconv.ParseUint(m[1], 10, 64)
	s.emitted, _ = strconv.ParseUint(m[2], 10, 64)
	s.lost, _ = strconv.ParseUint(m[3], 10, 64)
	s.lostPerCPU = sumFields(t, m[4])
	return s
}

func sumFields(t *testing.T, s string) uint64 {
	t.Helper()
	var sum uint64
	for _, f := range strings.Fields(s) {
		v, err := strconv.ParseUint(f, 10, 64)
		must(t, err)
		sum += v
	}
	return sum
}

// Loss is visible: with a one-page ring buffer and twtrace stopped (SIGSTOP) while a few
// hundred connections come and go, the kernel must drop events; every output says how
// many, per CPU, and the aggregates say they are incomplete. What was not lost all
// arrives: decoded == written by the kernel, and written + lost == what happened.
func TestLossIsVisible(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	if os.Getpagesize() != 4096 {
		t.Skipf("the 4K ring buffer is one page only with 4 KiB pages (here %d)", os.Getpagesize())
	}
	const conns = 300 // ~3000 records of 104 bytes; 4 KiB holds 39
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, r *twtraceRun, s summaryCounts)
	}{
		{"watch json", []string{"watch", "-o", "json", "--events", "state"}, func(t *testing.T, r *twtraceRun, s summaryCounts) {
			var events, count, total, perCPU uint64
			sc := bufio.NewScanner(&r.stdout)
			for sc.Scan() {
				var rec struct {
					Kind    string   `json:"kind"`
					Count   uint64   `json:"count"`
					Total   uint64   `json:"total"`
					PerCPU  []uint64 `json:"per_cpu"`
					Lost    uint64   `json:"lost"`    // end
					Decoded uint64   `json:"decoded"` // end
				}
				if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
					t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
				}
				switch rec.Kind {
				case "start":
					continue
				case "end":
					if rec.Lost != s.lost || rec.Decoded != s.decoded {
						t.Errorf("end record: %s; want the summary's %d lost, %d decoded", sc.Text(), s.lost, s.decoded)
					}
					continue
				case "lost":
				default:
					events++
					continue
				}
				count += rec.Count
				total, perCPU = rec.Total, 0
				for _, v := range rec.PerCPU {
					perCPU += v
				}
			}
			if count != s.lost || total != s.lost || perCPU != s.lost {
				t.Errorf("lost records: counts sum to %d, last total %d, its per-CPU values to %d; want each = %d lost (summary)", count, total, perCPU, s.lost)
			}
			// --events state: one line per record, and every transition is a record
			if events != s.decoded {
				t.Errorf("%d event lines for %d decoded records", events, s.decoded)
			}
			if want := uint64(10*conns + 2); s.emitted+s.lost != want {
				t.Errorf("written %d + lost %d = %d records, want %d (10 transitions per connection, 2 for the listener)", s.emitted, s.lost, s.emitted+s.lost, want)
			}
		}},
		{"watch text", []string{"watch"}, func(t *testing.T, r *twtraceRun, s summaryCounts) {
			re := regexp.MustCompile(`LOST (\d+) events \(ring buffer full; (\d+) in total, per CPU \[([\d ]*)\]\)`)
			var count uint64
			var last []string
			for _, m := range re.FindAllStringSubmatch(r.stdout.String(), -1) {
				n, _ := strconv.ParseUint(m[1], 10, 64)
				count += n
				last = m
			}
			if last == nil {
				t.Fatalf("no LOST line in the text stream:\n%s", r.stdout.String())
			}
			if total, _ := strconv.ParseUint(last[2], 10, 64); count != s.lost || total != s.lost || sumFields(t, last[3]) != s.lost {
				t.Errorf("LOST lines: %d in all, last %v; want %d everywhere (summary)", count, last[1:], s.lost)
			}
		}},
		{"timewait json", []string{"timewait", "-o", "json"}, func(t *testing.T, r *twtraceRun, s summaryCounts) {
			var v struct {
				Complete *bool  `json:"complete"`
				Lost     uint64 `json:"lost"`
			}
			if err := json.Unmarshal(r.stdout.Bytes(), &v); err != nil {
				t.Fatalf("timewait -o json: %v\n%s", err, r.stdout.String())
			}
			if v.Complete == nil || *v.Complete || v.Lost != s.lost {
				t.Errorf("view: complete %v, lost %d; want false, %d:\n%s", v.Complete, v.Lost, s.lost, r.stdout.String())
			}
		}},
		{"timewait text", []string{"timewait"}, func(t *testing.T, r *twtraceRun, s summaryCounts) {
			if want := fmt.Sprintf(" -- INCOMPLETE: %d events lost, ", s.lost); !strings.Contains(r.stdout.String(), want) {
				t.Errorf("view does not say %q:\n%s", want, r.stdout.String())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newHeldNetns(t)
			args := append(tt.args, "--ringbuf-size", "4K", "--backend", *testBackend, "--netns", fmt.Sprint(ns.inode))
			r := startTracing(t, nil, args...)
			loseEvents(t, r, ns, conns)
			r.stop(t)
			s := parseSummary(t, r.stderr.String())
			t.Logf("%d connections: %d records written, %d lost, %d decoded", conns, s.emitted, s.lost, s.decoded)
			if s.lost == 0 || s.lostPerCPU != s.lost || s.decoded != s.emitted {
				t.Errorf("summary: %d lost, per CPU summing to %d, %d decoded of %d written; want lost > 0 = the per-CPU sum, decoded = written:\n%s",
					s.lost, s.lostPerCPU, s.decoded, s.emitted, r.stderr.String())
			}
			tt.check(t, r, s)
		})
	}
	t.Run("serve", func(t *testing.T) {
		ns := newHeldNetns(t)
		r := startTracing(t, nil, "serve", "--listen", "127.0.0.1:0", "--ringbuf-size", "4K", "--backend", *testBackend, "--netns", fmt.Sprint(ns.inode))
		if !r.stderr.waitFor("serving", 30*time.Second) {
			t.Fatalf("serve did not start:\n%s", r.stderr.String())
		}
		addr := regexp.MustCompile(`listen=(\S+)`).FindStringSubmatch(r.stderr.String())
		if addr == nil {
			t.Fatalf("no listen address in:\n%s", r.stderr.String())
		}
		loseEvents(t, r, ns, conns)
		lost := metricValue(t, addr[1], "twtrace_events_lost_total")
		r.stop(t)
		s := parseSummary(t, r.stderr.String())
		if s.lostPerCPU != s.lost || s.decoded != s.emitted {
			t.Errorf("summary: %d lost, per CPU summing to %d, %d decoded of %d written:\n%s", s.lost, s.lostPerCPU, s.decoded, s.emitted, r.stderr.String())
		}
		if lost == 0 || lost != float64(s.lost) {
			t.Errorf("twtrace_events_lost_total = %v, want %d (> 0, as the summary says)", lost, s.lost)
		}
	})
}

// loseEvents stops twtrace, makes conns connections, and lets it go on.
func loseEvents(t *testing.T, r *twtraceRun, ns *heldNetns, conns int) {
	t.Helper()
	must(t, r.cmd.Process.Signal(syscall.SIGSTOP))
	waitStopped(t, r.cmd.Process.Pid)
	err := ns.churn(conns)
	must(t, r.cmd.Process.Signal(syscall.SIGCONT))
	if err != nil {
		t.Fatalf("churn: %v", err)
	}
}

// metricValue scrapes one unlabelled sample (or the first series of name{...}).
func metricValue(t *testing.T, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			must(t, err)
			return f
		}
	}
	t.Fatalf("no %s in /metrics:\n%s", series, body)
	return 0
}

var hideResets = "TWTRACE_TEST_HIDE=tcp_send_reset,tcp_receive_reset"

// With the reset tracepoints missing (hidden through the test-only TWTRACE_TEST_HIDE),
// --backend auto traces the other families and every output says which are not traced.
func TestUnavailableFamiliesEndToEnd(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	warnings := []string{"event family overflow unavailable: no backend can serve hook reset here: tracepoint: ",
		"event family reset unavailable: no backend can serve hook reset here: tracepoint: ", "reset=none"}
	t.Run("watch", func(t *testing.T) {
		ns := newHeldNetns(t)
		r := startTracing(t, []string{hideResets}, "watch", "-o", "json", "--backend", "auto", "--netns", fmt.Sprint(ns.inode))
		must(t, ns.churn(1))
		r.stop(t)
		for _, w := range append(warnings, "twtrace: not traced, unavailable on this kernel: overflow, reset") {
			if !strings.Contains(r.stderr.String(), w) {
				t.Errorf("stderr does not say %q:\n%s", w, r.stderr.String())
			}
		}
		kinds := map[string]int{}
		var unavailable []string
		sc := bufio.NewScanner(&r.stdout)
		for sc.Scan() {
			var rec struct{ Kind, Events, Reason string }
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
			}
			kinds[rec.Kind]++
			if rec.Kind == "unavailable" {
				if !strings.Contains(rec.Reason, "twtrace_test_hidden_tcp_") {
					t.Errorf("reason names no missing tracepoint: %s", sc.Text())
				}
				unavailable = append(unavailable, rec.Events)
			}
		}
		if strings.Join(unavailable, ",") != "overflow,reset" {
			t.Errorf("unavailable records for %v, want overflow, reset", unavailable)
		}
		// a slow (emulated) CPU may close the client before the peer's FIN arrives: its
		// timewait socket is born FIN_WAIT2 and re-armed to TIME_WAIT when the FIN comes
		if kinds["tw_rearm"] <= 1 {
			delete(kinds, "tw_rearm")
		}
		if want := map[string]int{"start": 1, "unavailable": 2, "state": 12, "tw_enter": 1, "end": 1}; fmt.Sprint(kinds) != fmt.Sprint(want) {
			t.Errorf("records %v, want %v:\n%s", kinds, want, r.stdout.String())
		}
	})
	t.Run("timewait", func(t *testing.T) {
		ns := newHeldNetns(t)
		r := startTracing(t, []string{hideResets}, "timewait", "-o", "json", "--backend", "auto", "--netns", fmt.Sprint(ns.inode))
		must(t, ns.churn(2))
		r.stop(t)
		var v struct {
			Families  []string          `json:"families"`
			NotTraced map[string]string `json:"not_traced"`
			Resets    *[]any            `json:"resets"`
			Overflows *[]any            `json:"overflows"`
			Lifetimes *[]any            `json:"lifetimes"`
			NS        []struct {
				Created   *uint64 `json:"created"`
				Overflows *uint64 `json:"overflows"`
			} `json:"namespaces"`
		}
		if err := json.Unmarshal(r.stdout.Bytes(), &v); err != nil {
			t.Fatalf("timewait -o json: %v\n%s", err, r.stdout.String())
		}
		if strings.Join(v.Families, ",") != "state,tw,connect" || len(v.NotTraced) != 2 || v.Resets != nil || v.Overflows != nil || v.Lifetimes == nil ||
			len(v.NS) != 1 || v.NS[0].Created == nil || *v.NS[0].Created != 2 || v.NS[0].Overflows != nil ||
			!strings.HasPrefix(v.NotTraced["reset"], "unavailable on this kernel: no backend can serve hook reset here") {
			t.Errorf("want state,tw,connect traced (2 created), overflow and reset null and said unavailable:\n%s", r.stdout.String())
		}
	})
	t.Run("serve", func(t *testing.T) {
		ns := newHeldNetns(t)
		r := startTracing(t, []string{hideResets}, "serve", "--listen", "127.0.0.1:0", "--backend", "auto", "--netns", fmt.Sprint(ns.inode))
		if !r.stderr.waitFor("serving", 30*time.Second) {
			t.Fatalf("serve did not start:\n%s", r.stderr.String())
		}
		addr := regexp.MustCompile(`listen=(\S+)`).FindStringSubmatch(r.stderr.String())
		if addr == nil {
			t.Fatalf("no listen address in:\n%s", r.stderr.String())
		}
		for family, want := range map[string]float64{"state": 1, "tw": 1, "overflow": 0, "reset": 0} {
			if got := metricValue(t, addr[1], `twtrace_event_family_available{family="`+family+`"}`); got != want {
				t.Errorf("twtrace_event_family_available{family=%q} = %v, want %v", family, got, want)
			}
		}
		r.stop(t)
	})
	// a forced backend stays strict, and nothing left to trace is an error: exit 3, one line
	for _, args := range [][]string{
		{"watch", "--backend", forcedBackend()},
		{"watch", "--backend", "auto", "--events", "reset,overflow"},
		{"timewait", "--backend", "auto", "--events", "reset"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			cmd := exec.Command(twtraceBin, append(args, "--duration", "1s")...)
			cmd.Env = append(os.Environ(), hideResets)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Fatalf("exit %v, want 3:\n%s", err, stderr.String())
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "twtrace: not available on this kernel: ") ||
				!strings.Contains(msg, "no backend can serve hook reset here") || !strings.Contains(msg, "twtrace_test_hidden_tcp_") {
				t.Errorf("want one line naming the hook and the missing tracepoint, got:\n%s", msg)
			}
		})
	}
}

// forcedBackend is the backend the matrix forces, or the one every kernel has.
func forcedBackend() string {
	if *testBackend != "auto" {
		return *testBackend
	}
	return "tracepoint"
}
