package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The load test's system under load: a private network namespace with a small port
// range and timewait table, nginx on :8080 and a second nginx on :8001 proxying to it.

// loadTools are the programs the load test drives; make test installs them.
var loadTools = []string{"ip", "nsenter", "ss", "nstat", "nginx", "ab"}

// missingLoadTool names the first tool not installed, "" when all are.
func missingLoadTool() string {
	for _, tool := range loadTools {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat(filepath.Join("/usr/sbin", tool)); err != nil {
				return tool
			}
		}
	}
	return ""
}

func toolPath(tool string) string {
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	return filepath.Join("/usr/sbin", tool)
}

// nginxConf: the upstream keeps at most two idle connections per worker, so the proxy
// closes the others first and holds their TIME_WAIT towards :8080 on ephemeral ports;
// ab's HTTP/1.0 connections leave TIME_WAIT on :8001. Idle upstream connections close a
// second after the load, so their timewait sockets expire with the others.
const nginxConf = `worker_processes 2;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	upstream backend {
		server 127.0.0.1:8080;
		keepalive 2;
		keepalive_timeout 1s;
	}
	server {
		listen 127.0.0.1:8080;
		location / { return 200 "ok\n"; }
	}
	server {
		listen 127.0.0.1:8001;
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
`

// loadStack is one namespace with its two nginx servers.
type loadStack struct {
	name  string // ip netns name, unique to this test process
	path  string // /run/netns/name
	inode uint64
	dir   string
	nginx *exec.Cmd
}

// Sysctls of the namespace under load, from the issue: 5,000 ephemeral ports, 3,000 buckets.
var loadSysctls = map[string]string{
	"net/ipv4/ip_local_port_range": "40000 44999",
	"net/ipv4/tcp_max_tw_buckets":  "3000",
}

func newLoadStack(t *testing.T, i int) *loadStack {
	t.Helper()
	s := &loadStack{name: fmt.Sprintf("twtrace-load-%d-%d", os.Getpid(), i), dir: t.TempDir()}
	s.path = filepath.Join("/run/netns", s.name)
	if out, err := exec.Command(toolPath("ip"), "netns", "add", s.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", s.name, err, out)
	}
	t.Cleanup(s.destroy)
	var st unix.Stat_t
	must(t, unix.Stat(s.path, &st))
	s.inode = st.Ino
	if out, err := s.command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	for name, value := range loadSysctls {
		cmd := s.command("sh", "-c", fmt.Sprintf("echo %s > /proc/sys/%s", value, name))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sysctl %s=%s: %v %s", name, value, err, out)
		}
	}
	conf := filepath.Join(s.dir, "nginx.conf")
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, s.dir)), 0o644))
	s.nginx = s.command("nginx", "-p", s.dir, "-c", conf, "-e", filepath.Join(s.dir, "error.log"))
	s.nginx.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, s.nginx.Start())
	deadline := time.Now().Add(10 * time.Second)
	for !s.listening(8080, 8001) {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "error.log"))
			t.Fatalf("nginx in %s never listened on :8080 and :8001:\n%s", s.name, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// command runs a program inside the namespace.
func (s *loadStack) command(name string, args ...string) *exec.Cmd {
	return exec.Command(toolPath("nsenter"), append([]string{"--net=" + s.path, "--", toolPath(name)}, args...)...)
}

func (s *loadStack) listening(ports ...int) bool {
	out, err := s.command("ss", "-ltnH").Output()
	if err != nil {
		return false
	}
	for _, p := range ports {
		if !bytes.Contains(out, []byte(fmt.Sprintf("127.0.0.1:%d ", p))) {
			return false
		}
	}
	return true
}

// destroy stops everything that runs in the namespace and deletes it.
func (s *loadStack) destroy() {
	if s.nginx != nil && s.nginx.Process != nil {
		syscall.Kill(-s.nginx.Process.Pid, syscall.SIGKILL)
		s.nginx.Wait()
	}
	if out, err := exec.Command(toolPath("ip"), "netns", "pids", s.name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	exec.Command(toolPath("ip"), "netns", "del", s.name).Run()
}

// counters reads the namespace's kernel counters as nstat shows them (absolute values,
// nstat's history left alone).
func (s *loadStack) counters() (map[string]uint64, error) {
	out, err := s.command("nstat", "-asz", "-j").Output()
	if err != nil {
		return nil, fmt.Errorf("nstat: %w", err)
	}
	var v struct {
		Kernel map[string]uint64 `json:"kernel"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("nstat output: %w", err)
	}
	return v.Kernel, nil
}

// timewait lists the namespace's timewait sockets as ss shows them.
func (s *loadStack) timewait() ([]twTuple, error) {
	out, err := s.command("ss", "-tanH", "state", "time-wait").Output()
	if err != nil {
		return nil, fmt.Errorf("ss: %w", err)
	}
	var tuples []twTuple
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		local, err1 := netip.ParseAddrPort(f[2])
		peer, err2 := netip.ParseAddrPort(f[3])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("ss line %q", line)
		}
		tuples = append(tuples, twTuple{SAddr: local.Addr().Unmap().String(), SPort: local.Port(),
			DAddr: peer.Addr().Unmap().String(), DPort: peer.Port()})
	}
	return tuples, nil
}

// abResult is what ab reported.
type abResult struct {
	Complete, Failed, Non2xx uint64
	Took                     time.Duration
	Output                   string
}

var abField = regexp.MustCompile(`(?m)^(Complete requests|Failed requests|Non-2xx responses|Time taken for tests):\s+([0-9.]+)`)

// ab runs ApacheBench against the proxy from inside the namespace.
func (s *loadStack) ab(requests, concurrency int) (abResult, error) {
	start := time.Now()
	out, err := s.command("ab", "-q", "-n", strconv.Itoa(requests), "-c", strconv.Itoa(concurrency), "http://127.0.0.1:8001/").CombinedOutput()
	r := abResult{Took: time.Since(start), Output: string(out)}
	if err != nil {
		return r, fmt.Errorf("ab: %v\n%s", err, out)
	}
	for _, m := range abField.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[1] {
		case "Complete requests":
			r.Complete = uint64(v)
		case "Failed requests":
			r.Failed = uint64(v)
		case "Non-2xx responses":
			r.Non2xx = uint64(v)
		}
	}
	return r, nil
}
