package tracer

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recordedStream holds real ring buffer records from loopback churn, each preceded by
// its length (uint32, little endian), gzipped. TestRecordStream writes it.
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

func loadRecordedStream(b *testing.B) [][]byte {
	f, err := os.Open(recordedStream)
	if err != nil {
		b.Fatalf("open the recorded stream: %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	must(b, "gunzip", err)
	raw, err := io.ReadAll(zr)
	must(b, "read", err)
	var records [][]byte
	for len(raw) >= 4 {
		n := binary.LittleEndian.Uint32(raw)
		records = append(records, raw[4:4+n])
		raw = raw[4+n:]
	}
	return records
}

// BenchmarkDecodeAggregateRecorded replays real records through what the timewait view
// does with each: decode, dispatch, fold into the aggregate. One op is one record.
func BenchmarkDecodeAggregateRecorded(b *testing.B) {
	records := loadRecordedStream(b)
	d := unitDecoder(250)
	agg := NewAggregate(time.Now())
	var e Event
	add := agg.Add
	for _, raw := range records { // warm: every key the stream has exists
		must(b, "decode", d.Decode(raw, &e))
		Dispatch(&e, AllFamilies, add)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if err := d.Decode(records[i], &e); err != nil {
			b.Fatal(err)
		}
		Dispatch(&e, AllFamilies, add)
		if i++; i == len(records) {
			i = 0
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
