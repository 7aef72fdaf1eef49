package window

import (
	"compress/gzip"
	"encoding/binary"
	"io"
	"os"
	"testing"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

func loadRecordedStream(b *testing.B) [][]byte {
	f, err := os.Open("../../tracer/testdata/churn-records.gz") // written by tracer's TestRecordStream
	if err != nil {
		b.Fatalf("open the recorded stream: %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		b.Fatalf("gunzip: %v", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		b.Fatalf("read: %v", err)
	}
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
	d := tracer.Decoder{HZ: 250}
	agg := NewAggregate(time.Now())
	var e tracer.Event
	add := agg.Add
	for _, raw := range records { // warm: every key the stream has exists
		if err := d.Decode(raw, &e); err != nil {
			b.Fatal(err)
		}
		tracer.Dispatch(&e, tracer.AllFamilies, add)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if err := d.Decode(records[i], &e); err != nil {
			b.Fatal(err)
		}
		tracer.Dispatch(&e, tracer.AllFamilies, add)
		if i++; i == len(records) {
			i = 0
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
