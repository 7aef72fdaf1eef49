package tracer

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recordedStream holds real ring buffer records from loopback churn, each preceded by
// its length (uint32, little endian), gzipped. TestRecordStream writes it;
// internal/window's BenchmarkDecodeAggregateRecorded replays it.
const recordedStream = "testdata/churn-records.gz"

// TestRecordStream records the stream the benchmark replays: 400 connections closed by
// the client, 400 by the server, and the namespace's exit killing their timewait sockets.
// Run it with TWTRACE_RECORD_STREAM=1 after a change to the record layout.
func TestRecordStream(t *testing.T) {
	if os.Getenv("TWTRACE_RECORD_STREAM") == "" {
		t.Skip("set TWTRACE_RECORD_STREAM=1 to record " + recordedStream)
	}
	requireRoot(t)
	ns := newNetns(t)
	tr, err := New(Options{Filter: Filter{NetNS: ns.inode}})
	must(t, "start tracer", err)
	defer tr.Close()
	var mu sync.Mutex
	var out bytes.Buffer
	records, enters, exits := 0, 0, 0
	tr.onRecord = func(raw []byte) {
		mu.Lock()
		defer mu.Unlock()
		binary.Write(&out, binary.LittleEndian, uint32(len(raw)))
		out.Write(raw)
		records++
		switch Kind(raw[offKind]) {
		case KindTWEnter:
			enters++
		case KindTWExit:
			exits++
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx, func(*Event) {}, nil) }()

	lfd, port := listenIn(t, ns, unix.AF_INET)
	for range 400 {
		clientCloses(t, ns, unix.AF_INET, lfd, port)
		serverCloses(t, ns, unix.AF_INET, lfd, port)
	}
	unix.Close(lfd)
	ns.Destroy()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		finished := enters > 0 && exits >= enters
		mu.Unlock()
		if finished {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("timewait sockets did not all die with their namespace: %d born, %d died", enters, exits)
		}
	}
	cancel()
	must(t, "run", <-done)
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(out.Bytes())
	must(t, "compress", w.Close())
	must(t, "write", os.WriteFile(recordedStream, gz.Bytes(), 0o644))
	t.Logf("%d records (%d timewait births, %d deaths), %d bytes compressed", records, enters, exits, gz.Len())
}
