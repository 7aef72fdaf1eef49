package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/cgroup2"
	"github.com/twtrace/twtrace/internal/containertest"
	"golang.org/x/sys/unix"
)

// A real pod of a real containerd (CRI plugin, runc, CNI), made as the kubelet makes one (cgroupfs
// driver), with two containers that each open and close connections in the pod's network namespace:
// every view names it. watch --pod keeps its sockets in the kernel and names each event's pod and
// container; timewait lists each container's timewait sockets and names the namespace's pod; serve
// labels its series namespace/pod (the pod, not its containers) once it is among the busiest, and its
// namespace's gauges; stat names the pod holding the namespace.
func TestRealPodNamedEverywhere(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs containerd and twtrace")
	}
	if testing.Short() {
		t.Skip("-short: starts containerd")
	}
	if why := containertest.Missing(); why != "" {
		t.Skip(why)
	}
	h, err := cgroup2.Find()
	if err != nil {
		t.Skipf("this machine: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ctd := containertest.StartForTest(ctx, t)
	pod, podID := ctd.RunPodForTest(ctx, t, "twtrace-cmd-pod")
	uid := pod.UID
	sandbox, err := h.Procs(pod.CgroupParent + "/" + podID)
	if err != nil || len(sandbox) != 1 {
		t.Fatalf("the sandbox's processes: %v %v", sandbox, err)
	}
	var st unix.Stat_t
	must(t, unix.Stat(fmt.Sprintf("/proc/%d/ns/net", sandbox[0]), &st))
	podNetns := fmt.Sprint(st.Ino)
	named := "shop/" + pod.Name

	watch, watchOut, watchErr := startTwtrace(t, "watch", "-o", "json", "--events", "tw", "--backend", *testBackend,
		"--cri-socket", ctd.Socket, "--pod", named)
	view, viewOut, viewErr := startTwtrace(t, "timewait", "-o", "json", "--backend", *testBackend,
		"--cri-socket", ctd.Socket, "--netns", podNetns)
	serve, _, serveErr := startTwtrace(t, "serve", "--listen", "127.0.0.1:0", "--backend", *testBackend,
		"--cri-socket", ctd.Socket, "--netns", podNetns)
	defer stopTwtrace(t, serve, serveErr)
	if !serveErr.waitFor("serving", 30*time.Second) {
		t.Fatalf("serve did not start:\n%s", serveErr.String())
	}
	addr := regexp.MustCompile(`listen=(\S+)`).FindStringSubmatch(serveErr.String())[1]

	const web, api = 10, 4
	ids := map[string]string{} // container name -> id
	// churned waits until container name has churned n connections times times
	churned := func(name string, n, times int) {
		t.Helper()
		logFile := filepath.Join(ctd.Dir, "pods", uid, name+".log")
		deadline := time.Now().Add(30 * time.Second)
		for b, _ := os.ReadFile(logFile); strings.Count(string(b), fmt.Sprintf(" churned %d\n", n)) < times; b, _ = os.ReadFile(logFile) {
			if time.Now().After(deadline) {
				t.Fatalf("container %s never churned %d times: %q", name, times, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	churn := func(name string, n int) {
		t.Helper()
		id, err := ctd.RunContainer(ctx, podID, pod, name, "churn", fmt.Sprint(n))
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = id
		churned(name, n, 1)
	}
	podSeries := []string{`namespace="shop"`, fmt.Sprintf(`pod=%q`, pod.Name)}
	inPodNetns := fmt.Sprintf(`netns=%q`, podNetns)
	// counted scrapes until the pod's namespace has counted want timewait sockets created,
	// in the pod's series and other's together, and returns the pod's and other's
	counted := func(want float64) (m map[string]float64, own, other float64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			m, body := scrape(t, addr)
			own, _ = sumWhere(m, "twtrace_timewait_created_total", append(podSeries, inPodNetns)...)
			other, _ = sumWhere(m, "twtrace_timewait_created_total", `unit="other"`, inPodNetns)
			if own+other == want {
				return m, own, other
			}
			if time.Now().After(deadline) {
				t.Fatalf("the pod's namespace never counted %v timewait sockets created:\n%s", want, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	churn("web", web)
	// the fold that first sees the pod puts its counts in other and admits it among the
	// busiest: from the next fold on, it counts in its own series
	_, ownBefore, otherBefore := counted(web)
	if otherBefore == 0 {
		t.Errorf("the pod counted in its own series before it was among the busiest")
	}
	churn("api", api)
	m, own, other := counted(web + api)
	if own != ownBefore+api || other != otherBefore {
		t.Errorf("after the pod joined: its series %v (+%v), other %v (+%v); want +%d and +0", own, own-ownBefore, other, other-otherBefore, api)
	}
	for name, want := range map[string]float64{
		"twtrace_workload_timewait_sockets": web + api, // born while tracing: all of them
		"twtrace_timewait_sockets":          web + api, // the pod's namespace's table
	} {
		if got, n := sumWhere(m, name, append(podSeries, inPodNetns)...); got != want || n != 1 {
			t.Errorf("%s{pod} = %v in %d series, want %v in one", name, got, n, want)
		}
	}

	out, err := exec.Command(twtraceBin, "stat", "-o", "json", "--netns", podNetns, "--cri-socket", ctd.Socket).Output()
	must(t, err)
	var stat struct {
		TimeWait uint64         `json:"time_wait"`
		Workload *workloadNames `json:"workload"`
	}
	must(t, json.Unmarshal(out, &stat))
	if stat.TimeWait != web+api || stat.Workload == nil || stat.Workload.Pod != pod.Name || stat.Workload.PodNamespace != "shop" || stat.Workload.PodUID != uid {
		t.Errorf("stat: %s", out)
	}

	// as the DaemonSet runs it: user 65532 with its six capabilities reaches the CRI socket
	// (root:root, 0660) only through the supplementary group 0 the DaemonSet adds
	t.Run("DaemonSetUser", func(t *testing.T) {
		bin := nobodyBinary(t)
		daemonSetCaps := []string{"bpf", "perfmon", "syslog", "sys_admin", "sys_ptrace", "dac_read_search"}
		manifest, err := os.ReadFile("../../deploy/kubernetes/daemonset.yaml")
		must(t, err)
		for _, line := range []string{"runAsUser: 65532", "supplementalGroups: [0]",
			"add: [" + strings.ToUpper(strings.Join(daemonSetCaps, ", ")) + "]"} {
			if !strings.Contains(string(manifest), line) {
				t.Errorf("deploy/kubernetes/daemonset.yaml does not say %q, as this test runs twtrace", line)
			}
		}
		for _, groups := range []string{"0", ""} {
			out, err := asUser(ctx, 65532, groups, bin, daemonSetCaps,
				"stat", "-o", "json", "--netns", podNetns, "--cri-socket", ctd.Socket).CombinedOutput()
			if groups == "" {
				if err == nil || !strings.Contains(string(out), "connect: permission denied") {
					t.Errorf("stat as 65532 without group 0 reached the CRI socket: %v %s", err, out)
				}
				continue
			}
			must(t, err)
			stat.Workload = nil
			must(t, json.Unmarshal(out, &stat))
			if stat.Workload == nil || stat.Workload.Pod != pod.Name || stat.Workload.PodNamespace != "shop" {
				t.Errorf("stat as 65532 with group 0 did not name the pod: %s", out)
			}
		}
	})

	stopTwtrace(t, watch, watchErr)
	perContainer := map[string]int{}
	for _, e := range jsonLines(t, watchOut.Bytes()) {
		if e["pod_namespace"] != "shop" || e["pod"] != pod.Name || e["pod_uid"] != uid {
			t.Errorf("watch --pod: an event of another workload: %v", e)
		}
		if e["kind"] == "tw_enter" {
			perContainer[fmt.Sprint(e["container"])]++
		}
	}
	if perContainer["web"] != web || perContainer["api"] != api || len(perContainer) != 2 {
		t.Errorf("watch: tw_enter per container %v, want web %d, api %d", perContainer, web, api)
	}

	stopTwtrace(t, view, viewErr)
	var v struct {
		Namespaces []struct {
			Live     *int64         `json:"live"`
			Workload *workloadNames `json:"workload"`
		} `json:"namespaces"`
		Workloads []workloadJSON `json:"workloads"`
	}
	must(t, json.Unmarshal(viewOut.Bytes(), &v))
	if len(v.Namespaces) != 1 || v.Namespaces[0].Workload == nil || v.Namespaces[0].Workload.Name != named ||
		v.Namespaces[0].Live == nil || *v.Namespaces[0].Live != web+api {
		t.Errorf("timewait: the namespace held by %s with %d live: %s", named, web+api, viewOut)
	}
	rows := map[string]workloadJSON{}
	for _, r := range v.Workloads {
		if r.Workload != nil {
			rows[r.Workload.Name] = r
		}
	}
	for ctr, n := range map[string]uint64{"web": web, "api": api} {
		r, ok := rows[named+"/"+ctr]
		if !ok || *r.Created != n || *r.TimeWaitNow != n || r.Workload.Container != ctr || r.NetNS != uint32(st.Ino) {
			t.Errorf("timewait: no row of %s/%s with %d created and held: %s", named, ctr, n, viewOut)
		}
	}
	// watch --container, started once the containers exist: the kernel keeps one container's sockets,
	// though both churn again in the same namespace
	one, oneOut, oneErr := startTwtrace(t, "watch", "-o", "json", "--events", "tw", "--backend", *testBackend,
		"--cri-socket", ctd.Socket, "--container", ids["web"][:12])
	for name, n := range map[string]int{"web": web, "api": api} {
		procs, err := h.Procs(pod.CgroupParent + "/" + ids[name])
		if err != nil || len(procs) != 1 {
			t.Fatalf("container %s's processes: %v %v", name, procs, err)
		}
		must(t, unix.Kill(procs[0], unix.SIGUSR1))
		churned(name, n, 2)
	}
	stopTwtrace(t, one, oneErr)
	entered := 0
	for _, e := range jsonLines(t, oneOut.Bytes()) {
		if e["container_id"] != ids["web"] || e["container"] != "web" || e["pod"] != pod.Name {
			t.Errorf("watch --container: an event of another workload: %v", e)
		}
		if e["kind"] == "tw_enter" {
			entered++
		}
	}
	if entered != web || strings.Contains(oneErr.String(), " 0 filtered in the kernel") {
		t.Errorf("watch --container: %d tw_enter, want %d, and api's events filtered in the kernel:\n%s", entered, web, oneErr.String())
	}
}
