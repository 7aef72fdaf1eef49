package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/cgroup2"
	"golang.org/x/sys/unix"
)

// childNoCgroup2 makes this test binary unmount the cgroup2 hierarchy in the mount namespace it
// was started in, then become the command after it: twtrace on a host without cgroup v2.
const childNoCgroup2 = "TWTRACE_CMD_TEST_NO_CGROUP2"

func init() {
	if mnt := os.Getenv(childNoCgroup2); mnt != "" {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			fmt.Fprintln(os.Stderr, "unmount cgroup2:", err)
			os.Exit(1)
		}
		args := os.Args[1:]
		if err := syscall.Exec(args[0], args, os.Environ()); err != nil {
			fmt.Fprintln(os.Stderr, "exec:", err)
			os.Exit(1)
		}
	}
}

type testCgroups struct {
	h   cgroup2.Hierarchy
	top string
}

func newTestCgroups(t *testing.T, paths ...string) *testCgroups {
	t.Helper()
	h, err := cgroup2.Find()
	if err != nil {
		t.Skipf("this machine: %v", err)
	}
	cg := &testCgroups{h: h, top: fmt.Sprintf("/twtrace-cmd-%d", os.Getpid())}
	for _, p := range paths {
		dir, err := h.Dir(cg.top + p)
		must(t, err)
		must(t, os.MkdirAll(dir, 0o755))
	}
	t.Cleanup(func() {
		topDir, _ := h.Dir(cg.top)
		var dirs []string
		filepath.WalkDir(topDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		}
	})
	return cg
}

// in runs f with this process moved into the cgroup top+path: its sockets belong there.
func (cg *testCgroups) in(t *testing.T, path string, f func()) {
	t.Helper()
	home, err := cgroup2.ProcessPath(os.Getpid())
	must(t, err)
	move := func(p string) {
		dir, err := cg.h.Dir(p)
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0))
	}
	move(cg.top + path)
	defer move(home)
	f()
}

// jsonLines are the events of a watch -o json stream, without its own start and end records.
func jsonLines(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q: %v", sc.Text(), err)
		}
		if m["kind"] != "start" && m["kind"] != "end" {
			lines = append(lines, m)
		}
	}
	return lines
}

const (
	wlUID        = "0f6ad3b4-1c3e-4b8f-9a1d-7e2c5b8a9d10"
	wlUIDSystemd = "0f6ad3b4_1c3e_4b8f_9a1d_7e2c5b8a9d10" // as the kubelet's systemd driver writes it
	wlCtr        = "5c1c5d1a3f1f4f2a8d1e0b7c2a9e6d4b3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c"
)

// watch names the workload of every socket: a systemd unit, and a pod's container under the
// kubelet's cgroupfs layout (UID and container id: no runtime here names it); --cgroup keeps one
// subtree in the kernel and the summary counts what it dropped.
func TestWatchNamesWorkloads(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates cgroups")
	}
	const unit = "/system.slice/demo.service"
	const pod = "/kubepods/besteffort/pod" + wlUID + "/" + wlCtr
	cg := newTestCgroups(t, unit, pod)
	for _, filtered := range []bool{false, true} {
		var out []byte
		var stderr string
		inNetns(t, func(inode uint64) {
			args := []string{"watch", "-o", "json", "--backend", *testBackend, "--netns", fmt.Sprint(inode)}
			if filtered {
				args = append(args, "--cgroup", cg.top+"/kubepods")
			}
			cmd, stdout, errw := startTwtrace(t, args...)
			cg.in(t, unit, func() { clientFirst(t, 0, 1) })
			cg.in(t, pod, func() { clientFirst(t, 0, 1) })
			stopTwtrace(t, cmd, errw)
			out, stderr = stdout.Bytes(), errw.String()
		})
		seen := map[string]int{}
		for _, e := range jsonLines(t, out) {
			switch e["cgroup"] {
			case cg.top + unit:
				if filtered || e["unit"] != "demo.service" || e["pod_uid"] != nil || e["container_id"] != nil {
					t.Errorf("unit event: %v", e)
				}
			case cg.top + pod:
				if e["pod_uid"] != wlUID || e["container_id"] != wlCtr || e["unit"] != nil || e["pod"] != nil {
					t.Errorf("pod event: %v", e)
				}
			default:
				t.Errorf("event of another cgroup: %v", e)
			}
			if id, ok := e["cgroup_id"].(float64); !ok || id == 0 {
				t.Errorf("no cgroup id: %v", e)
			}
			seen[e["cgroup"].(string)]++
		}
		// each connection: the listener, the client and the accepted socket, all in the cgroup
		if seen[cg.top+pod] < 9 || (!filtered && seen[cg.top+unit] < 9) {
			t.Errorf("filtered=%v: events per cgroup %v\n%s", filtered, seen, out)
		}
		if filtered && strings.Contains(stderr, " 0 filtered in the kernel") {
			t.Errorf("--cgroup dropped nothing in the kernel:\n%s", stderr)
		}
	}
}

// Without a cgroup v2 hierarchy, watch says so once, and every workload stays unknown (the kernel
// still gives each socket the root of its default hierarchy); --cgroup is refused.
func TestWatchWithoutCgroup2(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace in a mount namespace of its own")
	}
	h, err := cgroup2.Find()
	if err != nil {
		t.Skipf("this machine: %v", err)
	}
	without := func(args ...string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], append([]string{twtraceBin}, args...)...)
		cmd.Env = append(os.Environ(), childNoCgroup2+"="+h.Mount)
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		return cmd
	}
	out, err := without("watch", "--cgroup", "/", "--duration", "1s").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 ||
		strings.TrimSpace(string(out)) != "twtrace: --cgroup, --pod and --container need a cgroup v2 hierarchy: no cgroup v2 hierarchy mounted" {
		t.Errorf("--cgroup without cgroup2: %v\n%s", err, out)
	}
	var stdout bytes.Buffer
	var stderr *stderrWatch
	inNetns(t, func(inode uint64) {
		cmd := without("watch", "-o", "json", "--backend", *testBackend, "--netns", fmt.Sprint(inode), "--duration", "30s")
		cmd.Stdout = &stdout
		pipe, err := cmd.StderrPipe()
		must(t, err)
		stderr = watchStderr(pipe)
		must(t, cmd.Start())
		if !stderr.waitFor(" tracing ", 60*time.Second) {
			cmd.Process.Kill()
			t.Fatalf("twtrace never said it was tracing:\n%s", stderr.String())
		}
		clientFirst(t, 0, 1)
		stopTwtrace(t, cmd, stderr)
	})
	if n := strings.Count(stderr.String(), "no cgroup v2 hierarchy mounted: workloads stay unknown"); n != 1 {
		t.Errorf("said %d times that no cgroup v2 hierarchy is mounted:\n%s", n, stderr.String())
	}
	lines := jsonLines(t, stdout.Bytes())
	if len(lines) < 9 {
		t.Fatalf("%d events:\n%s\n%s", len(lines), stdout.String(), stderr.String())
	}
	for _, e := range lines {
		if e["cgroup"] != nil || e["unit"] != nil || e["pod_uid"] != nil {
			t.Errorf("a workload named without a hierarchy: %v", e)
		}
	}
}

// abortUnread makes one loopback connection whose server closes with unread data: it sends a
// reset (tcp_abort_on_close), which the client receives.
func abortUnread(t *testing.T) {
	t.Helper()
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
	_, err = unix.Write(c, []byte("unread"))
	must(t, err)
	fds := []unix.PollFd{{Fd: int32(a), Events: unix.POLLIN}}
	_, err = unix.Poll(fds, 5000)
	must(t, err)
	unix.Close(a)
	fds = []unix.PollFd{{Fd: int32(c), Events: unix.POLLIN}}
	unix.Poll(fds, 5000) // the reset arrives
}

// timewait and doctor count per workload what the kernel did for each: a systemd unit and a pod
// (kubelet's systemd driver, no runtime: named by UID) share a namespace whose timewait table holds
// 5; the unit's 2 closes and a reset, then the pod's 6 closes, of which 3 find the table full.
func TestViewsPerWorkload(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates cgroups")
	}
	const unit = "/system.slice/demo.service"
	const pod = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + wlUIDSystemd + ".slice/cri-containerd-" + wlCtr + ".scope"
	cg := newTestCgroups(t, unit, pod)
	var view, doctor []byte
	inNetns(t, func(inode uint64) {
		must(t, os.WriteFile("/proc/sys/net/ipv4/tcp_max_tw_buckets", []byte("5"), 0o644))
		holder := exec.Command("sleep", "600") // the namespace reachable through /proc
		must(t, holder.Start())
		defer holder.Process.Kill()
		common := []string{"-o", "json", "--backend", *testBackend, "--netns", fmt.Sprint(inode)}
		tw, twOut, twErr := startTwtrace(t, append([]string{"timewait"}, common...)...)
		doc, docOut, docErr := startTwtrace(t, append([]string{"doctor", "--duration", "10m"}, common...)...)
		cg.in(t, unit, func() {
			clientFirst(t, 0, 2)
			abortUnread(t)
		})
		cg.in(t, pod, func() { clientFirst(t, 0, 6) })
		if n := tcpExtCounter(t, "TCPTimeWaitOverflow"); n != 3 {
			t.Fatalf("the kernel counted %d overflows, want 3: the test's premise", n)
		}
		time.Sleep(300 * time.Millisecond) // the last records are read within 100 ms
		stopTwtrace(t, tw, twErr)
		stopTwtrace(t, doc, docErr)
		view, doctor = twOut.Bytes(), docOut.Bytes()
	})
	want := map[string][5]uint64{ // held, created, overflows, resets sent, received
		"demo.service": {2, 2, 0, 1, 1},
		"pod:" + wlUID: {3, 3, 3, 0, 0},
	}
	check := func(what string, rows []workloadJSON) {
		t.Helper()
		got := map[string][5]uint64{}
		for _, r := range rows {
			if r.Workload == nil || r.TimeWaitNow == nil || r.Created == nil || r.Overflows == nil || r.ResetsSent == nil || r.ResetsRecv == nil {
				t.Errorf("%s: a row with an unknown workload or count: %+v", what, r)
				continue
			}
			got[r.Workload.Name] = [5]uint64{*r.TimeWaitNow, *r.Created, *r.Overflows, *r.ResetsSent, *r.ResetsRecv}
		}
		if len(got) != len(want) || got["demo.service"] != want["demo.service"] || got["pod:"+wlUID] != want["pod:"+wlUID] {
			t.Errorf("%s: per workload (held, created, overflows, resets sent, received) %v, want %v", what, got, want)
		}
	}
	var v struct {
		Workloads []workloadJSON `json:"workloads"`
	}
	must(t, json.Unmarshal(view, &v))
	check("timewait", v.Workloads)
	var d struct {
		Namespaces []struct {
			Traced struct {
				Workloads []workloadJSON `json:"workloads"`
			} `json:"traced"`
		} `json:"namespaces"`
	}
	must(t, json.Unmarshal(doctor, &d))
	if len(d.Namespaces) != 1 {
		t.Fatalf("doctor: %s", doctor)
	}
	check("doctor", d.Namespaces[0].Traced.Workloads)
	for _, r := range v.Workloads {
		if r.Workload != nil && r.Workload.Name == "pod:"+wlUID && (r.Forecast == nil || r.Workload.Cgroup != cg.top+pod) {
			t.Errorf("the pod's row: %+v %+v", r.Workload, r.Forecast)
		}
	}
}
