package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The capabilities watch needs, by setpriv's names.
var tracingCaps = []string{"bpf", "perfmon", "syslog"}

// nobodyBinary copies twtrace where user nobody may run it (t.TempDir is 0700).
func nobodyBinary(t *testing.T) string {
	t.Helper()
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace as another user")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux) to run twtrace as nobody with chosen capabilities")
	}
	if out, err := asNobody(context.Background(), "/bin/true", tracingCaps).CombinedOutput(); err != nil {
		t.Skipf("this setpriv cannot grant %v (util-linux too old to name CAP_BPF, CAP_PERFMON?): %v %s", tracingCaps, err, out)
	}
	dir, err := os.MkdirTemp("", "twtrace-nobody")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	data, err := os.ReadFile(twtraceBin)
	must(t, err)
	bin := filepath.Join(dir, "twtrace")
	must(t, os.WriteFile(bin, data, 0o755))
	return bin
}

// asNobody runs twtrace as user nobody holding exactly caps (effective, inheritable,
// ambient and bounding), and nothing else.
func asNobody(ctx context.Context, bin string, caps []string, args ...string) *exec.Cmd {
	return asUser(ctx, 65534, "", bin, caps, args...)
}

// asUser runs twtrace as uid (its group the same number) with the supplementary groups
// (comma-separated, "" for none) holding exactly caps.
func asUser(ctx context.Context, uid int, groups, bin string, caps []string, args ...string) *exec.Cmd {
	set := "-all"
	for _, c := range caps {
		set += ",+" + c
	}
	id := strconv.Itoa(uid)
	groupArgs := []string{"--clear-groups"}
	if groups != "" {
		groupArgs = []string{"--groups", groups}
	}
	setpriv := append(append([]string{"--reuid", id, "--regid", id}, groupArgs...),
		"--inh-caps", set, "--ambient-caps", set, "--bounding-set", set, "--", bin)
	cmd := exec.CommandContext(ctx, "setpriv", append(setpriv, args...)...)
	cmd.Dir = "/"
	return cmd
}

// kallsymsPolicy reads what decides whether CAP_SYSLOG is needed to see kernel addresses.
func kallsymsPolicy(t *testing.T) (kptrRestrict, perfParanoid int) {
	t.Helper()
	read := func(name string) int {
		b, err := os.ReadFile("/proc/sys/kernel/" + name)
		must(t, err)
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		must(t, err)
		return v
	}
	return read("kptr_restrict"), read("perf_event_paranoid")
}

// As nobody with only CAP_BPF, CAP_PERFMON and CAP_SYSLOG, watch traces a connection
// exactly as root does.
func TestWatchWithLeastPrivilege(t *testing.T) {
	bin := nobodyBinary(t)
	if kptr, _ := kallsymsPolicy(t); kptr >= 2 {
		t.Skip("kernel.kptr_restrict=2 hides kallsyms addresses even from CAP_SYSLOG: twtrace needs root here")
	}
	type conn struct{ lport, cport int }
	var c conn
	var cmd *exec.Cmd
	var stdout, stderr *stderrWatch
	inNetns(t, func(inode uint64) {
		// started from the namespace, so that the namespace lives as long as twtrace
		cmd = asNobody(context.Background(), bin, tracingCaps, "watch", "-o", "json", "--events", "state",
			"--backend", *testBackend, "--netns", fmt.Sprint(inode))
		out, err := cmd.StdoutPipe()
		must(t, err)
		errPipe, err := cmd.StderrPipe()
		must(t, err)
		stdout, stderr = watchStderr(out), watchStderr(errPipe)
		must(t, cmd.Start())
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		if !stderr.waitFor(" tracing ", 30*time.Second) {
			t.Fatalf("twtrace as nobody never said it was tracing:\n%s", stderr.String())
		}
		ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		must(t, err)
		must(t, unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
		must(t, unix.Listen(ln, 8))
		sa, _ := unix.Getsockname(ln)
		c.lport = sa.(*unix.SockaddrInet4).Port
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		must(t, err)
		must(t, unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: c.lport}))
		sa, _ = unix.Getsockname(fd)
		c.cport = sa.(*unix.SockaddrInet4).Port
		a, _, err := unix.Accept(ln)
		must(t, err)
		unix.Close(fd) // the client closes first and keeps a timewait socket
		unix.Read(a, make([]byte, 1))
		unix.Close(a)
		unix.Close(ln)
	})
	if cmd == nil || cmd.Process == nil {
		return
	}
	sock := func(sport, dport int) string { return fmt.Sprintf("%d->%d", sport, dport) }
	want := map[string][]string{
		sock(c.lport, 0):       {"CLOSE->LISTEN", "LISTEN->CLOSE"},
		sock(0, c.lport):       {"CLOSE->SYN_SENT"}, // connect() reports it before the local port is chosen
		sock(c.cport, c.lport): {"SYN_SENT->ESTABLISHED", "ESTABLISHED->FIN_WAIT1", "FIN_WAIT1->FIN_WAIT2", "FIN_WAIT2->TIME_WAIT"},
		sock(c.lport, c.cport): {"LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED", "ESTABLISHED->CLOSE_WAIT", "CLOSE_WAIT->LAST_ACK", "LAST_ACK->CLOSE"},
	}
	total := 0
	for _, seq := range want {
		total += len(seq)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(stdout.String(), "\n") < total {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events after 10s:\n%s\n%s", strings.Count(stdout.String(), "\n"), total, stdout, stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	must(t, cmd.Process.Signal(os.Interrupt))
	<-stdout.eof
	<-stderr.eof
	if err := cmd.Wait(); err != nil {
		t.Fatalf("twtrace watch as nobody: %v\n%s", err, stderr)
	}
	got := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var ev struct {
			Kind         string
			Sport, Dport int
			Old, New     string
			PID          int
		}
		if err := json.Unmarshal([]byte(line), &ev); err == nil && (ev.Kind == "start" || ev.Kind == "end") {
			continue // the stream's frame
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Kind != "state" {
			t.Fatalf("not a state event: %q: %v", line, err)
		}
		key := sock(ev.Sport, ev.Dport)
		got[key] = append(got[key], ev.Old+"->"+ev.New)
		if client := key == sock(0, c.lport) || key == sock(c.cport, c.lport); client && ev.PID != os.Getpid() {
			t.Errorf("client event owned by pid %d, want the test's %d: %s", ev.PID, os.Getpid(), line)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events per socket (local->remote port):\n got  %v\n want %v", got, want)
	}
}

// Without any one of its capabilities, twtrace exits 1 before loading anything, with one
// line naming the missing capability and how to grant it.
func TestWatchNamesMissingCapability(t *testing.T) {
	bin := nobodyBinary(t)
	kptr, paranoid := kallsymsPolicy(t)
	for _, drop := range tracingCaps {
		t.Run("without_"+drop, func(t *testing.T) {
			t.Parallel()
			if drop == "syslog" && kptr == 0 && paranoid <= 1 {
				t.Skip("this kernel shows kallsyms addresses to every user (kptr_restrict=0, perf_event_paranoid<=1): CAP_SYSLOG is not needed")
			}
			var keep []string
			for _, c := range tracingCaps {
				if c != drop {
					keep = append(keep, c)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := asNobody(ctx, bin, keep, "watch", "--backend", *testBackend, "--duration", "1s")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
				t.Fatalf("without CAP_%s: %v, want exit status 1\n%s", strings.ToUpper(drop), err, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			want := fmt.Sprintf("twtrace: missing CAP_%s (", strings.ToUpper(drop))
			grant := "run as root, or grant the capabilities: setcap cap_bpf,cap_perfmon,cap_syslog+ep " + bin
			if len(lines) != 1 || !strings.HasPrefix(lines[0], want) || !strings.HasSuffix(lines[0], grant) || strings.Count(lines[0], "CAP_") != 1 {
				t.Errorf("stderr:\n%s\nwant one line starting %q, naming no other capability, ending %q", stderr.String(), want, grant)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: %q, want nothing", stdout.String())
			}
		})
	}
}

// stat reads its own namespace as nobody with no capability at all, and says which
// capability another user's namespace needs.
func TestStatWithoutPrivilege(t *testing.T) {
	bin := nobodyBinary(t)
	var host unix.Stat_t
	must(t, unix.Stat("/proc/self/ns/net", &host)) // the test process is root
	inNetns(t, func(inode uint64) {
		ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		must(t, err)
		defer unix.Close(ln)
		must(t, unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
		must(t, unix.Listen(ln, 8))
		sa, _ := unix.Getsockname(ln)
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		must(t, err)
		defer unix.Close(c)
		must(t, unix.Connect(c, sa))
		a, _, err := unix.Accept(ln)
		must(t, err)
		defer unix.Close(a)

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := asNobody(ctx, bin, nil, "stat", "-o", "json", "--netns", fmt.Sprint(inode))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("stat as nobody: %v\n%s", err, stderr.String())
		}
		var got struct {
			NetNS  uint64            `json:"netns"`
			Total  int               `json:"total"`
			States map[string]uint64 `json:"states"`
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		must(t, dec.Decode(&got))
		if _, err := dec.Token(); err != io.EOF {
			t.Errorf("more than one namespace in %s", out)
		}
		if got.NetNS != inode || got.Total != 3 || got.States["LISTEN"] != 1 || got.States["ESTABLISHED"] != 2 {
			t.Errorf("stat: %s\nwant netns %d with 3 sockets: 1 LISTEN, 2 ESTABLISHED", out, inode)
		}

		// the host's namespace, held by root's processes
		cmd = asNobody(ctx, bin, nil, "stat", "--netns", fmt.Sprint(host.Ino))
		stderr.Reset()
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if cmd.ProcessState.ExitCode() != 1 || len(out) != 0 || len(lines) != 1 ||
			!strings.Contains(lines[0], "need CAP_SYS_PTRACE") && !strings.Contains(lines[0], "needs CAP_SYS_ADMIN") {
			t.Errorf("stat of the host's namespace as nobody: %v\n%s%s\nwant exit status 1 and one line naming the capability needed", err, out, stderr.String())
		}
	})
}
