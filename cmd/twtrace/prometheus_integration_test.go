package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
)

// startServe runs `twtrace serve` in the host namespace (its scrapes must not count in
// the test's namespace), tracing the namespace inode, and returns its address.
func startServe(t *testing.T, inode uint64) string {
	t.Helper()
	type started struct {
		cmd    *exec.Cmd
		stderr *stderrWatch
	}
	outside := make(chan started)
	go func() { // another goroutine, so another thread: the host namespace
		cmd, _, stderr := startTwtrace(t, "serve", "--listen", "127.0.0.1:0", "--backend", *testBackend, "--netns", fmt.Sprint(inode))
		outside <- started{cmd, stderr}
	}()
	s := <-outside
	t.Cleanup(func() { stopTwtrace(t, s.cmd, s.stderr) })
	if !s.stderr.waitFor("serving", 30*time.Second) {
		t.Fatalf("serve did not start:\n%s", s.stderr.String())
	}
	addr := regexp.MustCompile(`listen=(\S+)`).FindStringSubmatch(s.stderr.String())
	if addr == nil {
		t.Fatalf("no listen address in:\n%s", s.stderr.String())
	}
	return addr[1]
}

// kernelResetReasons are the reasons this kernel's tcp_send_reset can report, read from
// its BTF: enum sk_rst_reason without its count (6.10+), or twtrace's inferred ones.
func kernelResetReasons(t *testing.T) []string {
	t.Helper()
	spec, err := btf.LoadKernelSpec()
	must(t, err)
	var e *btf.Enum
	if spec.TypeByName("sk_rst_reason", &e) != nil {
		return []string{"not_specified", "tcp_abort_on_close", "tcp_state"}
	}
	var names []string
	for _, v := range e.Values {
		if v.Name != "SK_RST_REASON_MAX" {
			names = append(names, strings.ToLower(strings.TrimPrefix(v.Name, "SK_RST_REASON_")))
		}
	}
	slices.Sort(names)
	return names
}

// A fresh serve, before any traffic, exports at 0 every series whose labels are known:
// resets by direction and this kernel's reasons, lifetimes by substate and cause, and the
// traced namespace's created and overflow counters.
func TestServeFreshScrapeHasKnownSeries(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	inNetns(t, func(inode uint64) {
		holder := exec.Command("sleep", "600") // keeps the namespace reachable through /proc
		must(t, holder.Start())
		defer holder.Process.Kill()
		m, body := scrape(t, startServe(t, inode))

		// the other and unknown workloads' series exist from the start; a workload's own
		// come when it joins the top K
		var wantResets, wantOverflow, wantCreated []string
		for _, unit := range []string{"other", "unknown"} {
			for _, r := range kernelResetReasons(t) {
				wantResets = append(wantResets, fmt.Sprintf(`twtrace_tcp_resets_total{direction="sent",namespace="",pod="",reason=%q,unit=%q}`, r, unit))
			}
			wantResets = append(wantResets, fmt.Sprintf(`twtrace_tcp_resets_total{direction="recv",namespace="",pod="",reason="none",unit=%q}`, unit))
			wantOverflow = append(wantOverflow, fmt.Sprintf(`twtrace_timewait_overflow_total{namespace="",netns="%d",pod="",unit=%q}`, inode, unit))
			for _, sub := range []string{"FIN_WAIT2", "TIME_WAIT"} {
				wantCreated = append(wantCreated, fmt.Sprintf(`twtrace_timewait_created_total{namespace="",netns="%d",pod="",substate=%q,unit=%q}`, inode, sub, unit))
			}
		}
		slices.Sort(wantResets)
		slices.Sort(wantOverflow)
		slices.Sort(wantCreated)
		want := map[string][]string{
			"twtrace_tcp_resets_total":        wantResets,
			"twtrace_timewait_overflow_total": wantOverflow,
			"twtrace_timewait_created_total":  wantCreated,
		}
		var counts []string
		for _, s := range []string{"FIN_WAIT2", "TIME_WAIT"} {
			for _, c := range []string{"expired", "killed", "killed_netns_exit", "killed_reuse", "killed_rst", "killed_syn"} {
				counts = append(counts, fmt.Sprintf(`twtrace_timewait_lifetime_seconds_count{cause=%q,substate=%q}`, c, s))
			}
		}
		slices.Sort(counts)
		want["twtrace_timewait_lifetime_seconds_count"] = counts
		for name, series := range want {
			var got []string
			for k, v := range m {
				if strings.HasPrefix(k, name+"{") {
					got = append(got, k)
					if v != 0 {
						t.Errorf("%s = %v before any traffic, want 0", k, v)
					}
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, series) {
				t.Errorf("%s: series\n %q\nwant\n %q", name, got, series)
			}
		}
		if _, n := sum(m, "twtrace_timewait_lifetime_seconds_bucket{"); n != len(counts)*(len(lifetimeBuckets)+1) {
			t.Errorf("%d lifetime buckets, want %d (+Inf included) for each of %d series:\n%s", n, len(lifetimeBuckets)+1, len(counts), body)
		}
	})
}

// tcpExtCounter reads a TcpExt counter of the calling thread's namespace from the
// kernel (what nstat shows as TcpExtNAME).
func tcpExtCounter(t *testing.T, name string) uint64 {
	t.Helper()
	data, err := os.ReadFile("/proc/thread-self/net/netstat")
	must(t, err)
	lines := strings.Split(string(data), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) {
			continue
		}
		if j := slices.Index(names, name); j > 0 {
			v, err := strconv.ParseUint(values[j], 10, 64)
			must(t, err)
			return v
		}
	}
	t.Fatalf("no TcpExt %s in /proc/thread-self/net/netstat", name)
	return 0
}

// promQuery is the part of a Prometheus HTTP API answer the tests read.
type promQuery struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

// promSample is one series of an instant query's answer.
type promSample struct {
	labels map[string]string
	value  float64
}

// promServer is a real Prometheus server scraping one target.
type promServer struct {
	addr   string
	stderr *bytes.Buffer
}

// startPrometheus runs Prometheus in the host namespace with the project's alert rules,
// a private TSDB and a short scrape interval, scraping target, and waits until it is ready.
func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs("../../deploy/prometheus/alerts.yaml")
	must(t, err)
	config := fmt.Sprintf(`global:
  scrape_interval: 500ms
  scrape_timeout: 400ms
  evaluation_interval: 500ms
rule_files: [%q]
scrape_configs:
  - job_name: twtrace
    static_configs: [{targets: [%q]}]
`, rules, target)
	must(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644))
	p := &promServer{stderr: &bytes.Buffer{}}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"))
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	started := make(chan error)
	go func() { // the host namespace, where serve listens
		l, err := net.Listen("tcp", "127.0.0.1:0") // a free port, released for Prometheus
		if err != nil {
			started <- err
			return
		}
		p.addr = l.Addr().String()
		l.Close()
		cmd.Args = append(cmd.Args, "--web.listen-address="+p.addr)
		started <- cmd.Start()
	}()
	must(t, <-started)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("prometheus exited: %v\n%s", err, p.stderr)
		default:
		}
		if resp, err := http.Get("http://" + p.addr + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 60s:\n%s", p.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// query runs an instant query through Prometheus' HTTP API.
func (p *promServer) query(t *testing.T, expr string) []promSample {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(expr))
	must(t, err)
	defer resp.Body.Close()
	var q promQuery
	must(t, json.NewDecoder(resp.Body).Decode(&q))
	if q.Status != "success" {
		t.Fatalf("query %s: %s %s", expr, q.Status, q.Error)
	}
	var out []promSample
	for _, r := range q.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		must(t, err)
		out = append(out, promSample{r.Metric, v})
	}
	return out
}

// waitValue polls expr until it is exactly one sample of value want, and fails after
// timeout saying what it last was.
func (p *promServer) waitValue(t *testing.T, expr string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := p.query(t, expr)
		if len(got) == 1 && got[0].value == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after %v, want one sample of %v\nprometheus:\n%s", expr, got, timeout, want, p.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A real Prometheus scrapes serve: what it stores equals what the kernel counted (16
// overflows from 20 client-first closes against tcp_max_tw_buckets 4), and because the
// counters existed at 0 before the first overflow, increase() sees it and the
// TimewaitOverflow alert of deploy/prometheus/alerts.yaml fires.
func TestPrometheusScrapesServe(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("needs the prometheus server (make test installs Debian's prometheus package)")
	}
	inNetns(t, func(inode uint64) {
		must(t, os.WriteFile("/proc/sys/net/ipv4/tcp_max_tw_buckets", []byte("4"), 0o644))
		holder := exec.Command("sleep", "600") // keeps the namespace reachable through /proc
		must(t, holder.Start())
		defer holder.Process.Kill()
		prom := startPrometheus(t, bin, startServe(t, inode))
		ns := fmt.Sprintf(`netns="%d"`, inode)

		// stored at 0 before any traffic: the first overflow will be an increase
		prom.waitValue(t, `sum(twtrace_timewait_overflow_total{`+ns+`})`, 0, 30*time.Second)
		prom.waitValue(t, `count(twtrace_timewait_overflow_total{`+ns+`,unit=~"other|unknown"})`, 2, 5*time.Second)
		prom.waitValue(t, `count(twtrace_timewait_lifetime_seconds_bucket)`, float64(2*6*(len(lifetimeBuckets)+1)), 5*time.Second)
		prom.waitValue(t, `count(twtrace_tcp_resets_total)`, float64(2*(len(kernelResetReasons(t))+1)), 5*time.Second)

		clientFirst(t, 0, 20)
		if n := tcpExtCounter(t, "TCPTimeWaitOverflow"); n != 16 {
			t.Fatalf("the kernel counted %d overflows (TcpExtTCPTimeWaitOverflow), want 16: the test's premise", n)
		}

		// the overflows count in the series of the test's workload (its cgroup) or in other's,
		// depending on when it joined the top K: all of them, in either
		prom.waitValue(t, `sum(twtrace_timewait_overflow_total{`+ns+`})`, 16, 30*time.Second)
		for expr, want := range map[string]float64{
			`twtrace_timewait_sockets{` + ns + `}`:                                                       4,
			`twtrace_timewait_max_buckets{` + ns + `}`:                                                   4,
			`sum(twtrace_timewait_created_total{` + ns + `})`:                                            4,
			`sum(twtrace_timewait_created_total{` + ns + `,substate="TIME_WAIT"})`:                       4,
			`sum(twtrace_tcp_state_transitions_total{to="TIME_WAIT"})`:                                   4,
			`twtrace_events_lost_total`:                                                                  0,
			`twtrace_event_family_available{family="overflow"}`:                                          1,
			`count(ALERTS{alertname="TimewaitOverflow",alertstate="firing",` + ns + `}) >= bool 1`:       1,
			`ALERTS{alertname="TimewaitOccupancyHigh",alertstate="pending",` + ns + `}`:                  1, // 4 of 4, for 5m
			`count(ALERTS{alertname=~"TwtraceLosingEvents|TwtraceEventFamilyUnavailable"}) or vector(0)`: 0,
		} {
			prom.waitValue(t, expr, want, 10*time.Second)
		}
	})
}
