package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
	"golang.org/x/sys/unix"
)

// A live run records its events as watch -o json writes them while timewait's window and
// doctor's measurer fold the same events; the binary, replaying the recording with
// --input, prints the traced sections the live run printed, exactly: lifetimes to the
// nanosecond, creations, overflows, resets, and doctor's measurements and findings.
func TestReplayMatchesLiveRun(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): traces, creates a network namespace, runs twtrace")
	}
	ns := testnet.New(t)
	defer ns.HoldSockets(t, 0)() // a process in the namespace, so that snapshots find it
	ns.Sysctl(t, "net/ipv4/tcp_max_tw_buckets", "4")
	ns.Sysctl(t, "net/ipv4/tcp_fin_timeout", "1")
	backend, err := tracer.ParseBackend(*testBackend)
	must(t, err)
	filter := tracer.Filter{NetNS: ns.Inode}
	tr, err := tracer.New(tracer.Options{Backend: backend, Filter: filter}) // as watch traces
	must(t, err)
	defer tr.Close()

	src := snapshot.NewSource(snapshot.Options{})
	inodes := []uint32{ns.Inode}
	var recorded bytes.Buffer
	names, _, err := (&workloadFlags{}).open(zerolog.Nop())
	must(t, err)
	p := newPrinter(&recorded, true, names)
	p.record(appendStart(nil, time.Now(), tr.Families(), filter))
	p.unavailable(tr.Unavailable())
	win := window.New(time.Now(), src.Baselines(inodes))
	doctor := newMeasurer(src, inodes, src.Baselines(inodes))
	doctor.traced, doctor.names = tr.Families(), names
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tr.Run(ctx, func(e *tracer.Event) {
			p.event(e)
			win.Add(e)
			doctor.win.Add(e)
		}, p.flush)
	}()

	lfd, port := ns.Listen(t, unix.AF_INET)
	defer unix.Close(lfd)
	// an expiry in FIN_WAIT2: the client closes, the server does not until it is gone
	c := ns.Connect(t, unix.AF_INET, port)
	a := testnet.Accept(t, lfd)
	unix.Close(c)
	time.Sleep(3 * time.Second) // tcp_fin_timeout is 1 s
	unix.Close(a)               // into a reset: the client's side is gone
	// a kill by SYN: the server closes first, then the client reconnects from its port
	c = ns.Socket(t, unix.AF_INET)
	must(t, unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
	must(t, unix.Connect(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: int(port)}))
	local, err := unix.Getsockname(c)
	must(t, err)
	a = testnet.Accept(t, lfd)
	unix.Close(a)
	unix.Read(c, make([]byte, 1))
	unix.Close(c)
	c = ns.Socket(t, unix.AF_INET)
	must(t, unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
	must(t, unix.Bind(c, local))
	must(t, unix.Connect(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: int(port)}))
	a = testnet.Accept(t, lfd)
	must(t, unix.SetsockoptLinger(a, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}))
	unix.Close(a) // an abortive close: resets, and no timewait socket
	unix.Close(c)
	// 4 timewait sockets, the limit, then 2 overflows
	for range 6 {
		ns.ClientCloses(t, unix.AF_INET, lfd, port)
	}
	time.Sleep(300 * time.Millisecond) // the last records are read within 100 ms

	var liveView, liveDoctor bytes.Buffer
	must(t, writeViewJSON(&liveView, timewaitView(win, tr, src, names, ns.Inode, 10, defaultTopWorkloads)))
	must(t, writeDoctor(&liveDoctor, doctor.report(kernelRelease()), true))
	cancel()
	must(t, <-done)
	st, err := tr.Stats()
	must(t, err)
	p.record(appendEnd(nil, time.Now(), st))
	p.stop()
	p.flush()

	file := filepath.Join(t.TempDir(), "recording.json")
	must(t, os.WriteFile(file, recorded.Bytes(), 0o644))
	replayed := func(args ...string) []byte {
		out, err := exec.Command(twtraceBin, append(args, "-o", "json", "--input", file)...).Output()
		if err != nil {
			t.Fatalf("twtrace %v --input: %v", args, err)
		}
		return out
	}

	type tracedSections struct {
		Complete   bool              `json:"complete"`
		Lost       uint64            `json:"lost"`
		Families   []string          `json:"families"`
		NotTraced  map[string]string `json:"not_traced"`
		Lifetimes  []map[string]any  `json:"lifetimes"`
		Namespaces []struct {
			NetNS     uint32  `json:"netns"`
			Created   *uint64 `json:"created"`
			Overflows *uint64 `json:"overflows"`
		} `json:"namespaces"`
		Overflows []map[string]any `json:"overflows"`
		Resets    []map[string]any `json:"resets"`
		ByProcess []map[string]any `json:"resets_by_process"`
		Workloads []map[string]any `json:"workloads"`
	}
	var want, got tracedSections
	must(t, json.Unmarshal(liveView.Bytes(), &want))
	replayedView := replayed("timewait")
	must(t, json.Unmarshal(replayedView, &got))
	for _, w := range append(want.Workloads, got.Workloads...) {
		dropNow(w)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the replayed view's traced sections differ from the live run's:\nlive:     %s\nreplayed: %s", liveView.Bytes(), replayedView)
	}
	if len(want.Lifetimes) != 2 || len(want.Overflows) != 1 || len(want.Resets) == 0 || !want.Complete || len(want.Workloads) == 0 ||
		want.Workloads[0]["workload"] == nil || len(want.Namespaces) != 1 || want.Namespaces[0].Created == nil ||
		want.Workloads[0]["created"] != float64(*want.Namespaces[0].Created) || want.Workloads[0]["overflows"] != float64(*want.Namespaces[0].Overflows) {
		t.Errorf("the live run should have measured an expiry, a kill, overflows and resets, completely:\n%s", liveView.Bytes())
	}

	type measured struct {
		Namespaces []struct {
			NetNS    uint32          `json:"netns"`
			Traced   json.RawMessage `json:"traced"`
			Findings []struct {
				ID string `json:"id"`
			} `json:"findings"`
		} `json:"namespaces"`
	}
	var wantDoctor, gotDoctor measured
	must(t, json.Unmarshal(liveDoctor.Bytes(), &wantDoctor))
	replayedDoctor := replayed("doctor")
	must(t, json.Unmarshal(replayedDoctor, &gotDoctor))
	for _, d := range []*measured{&wantDoctor, &gotDoctor} {
		for i := range d.Namespaces {
			d.Namespaces[i].Traced = withoutNow(t, d.Namespaces[i].Traced)
		}
	}
	found := func(d measured, id string) bool {
		for _, f := range d.Namespaces[0].Findings {
			if f.ID == id {
				return true
			}
		}
		return false
	}
	if len(wantDoctor.Namespaces) != 1 || len(gotDoctor.Namespaces) != 1 ||
		gotDoctor.Namespaces[0].NetNS != wantDoctor.Namespaces[0].NetNS ||
		!bytes.Equal(gotDoctor.Namespaces[0].Traced, wantDoctor.Namespaces[0].Traced) ||
		!found(wantDoctor, "max_tw_buckets_reached") || !found(gotDoctor, "max_tw_buckets_reached") {
		t.Errorf("doctor's measurements differ, or miss the overflows:\nlive:     %s\nreplayed: %s", liveDoctor.Bytes(), replayedDoctor)
	}
}

// dropNow drops what a workload row reads of now: the timewait table's forecast (the kernel's
// table, which a recording does not hold) and the rate (over the window until the view, or
// until the recording's end).
func dropNow(w map[string]any) {
	delete(w, "timewait_table_forecast")
	delete(w, "created_per_s")
}

// withoutNow drops what doctor's traced measurements read of now (dropNow).
func withoutNow(t *testing.T, traced json.RawMessage) json.RawMessage {
	t.Helper()
	var m map[string]any
	must(t, json.Unmarshal(traced, &m))
	workloads, _ := m["workloads"].([]any)
	for _, w := range workloads {
		dropNow(w.(map[string]any))
	}
	b, err := json.Marshal(m)
	must(t, err)
	return b
}
