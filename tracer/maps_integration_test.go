package tracer

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// entries counts the records a per-socket map holds: a hash's keys, a record table's
// claimed ways.
func entries(t *testing.T, tr *Tracer, name string) int {
	t.Helper()
	n, err := tr.recordCount(name)
	if err != nil {
		t.Fatalf("count %s: %v", name, err)
	}
	return n
}

// The per-socket maps are emptied at socket death: after 100 connections in both close
// orders and the namespace's exit, nothing is left. The namespace filter keeps every
// other socket of the machine out of them (a listener in another namespace proves it),
// so the count is exact.
func TestSocketMapsEmptiedAtDeath(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, c := range []struct {
		records Records
		hidden  map[string]bool
	}{{RecordTables, nil}, {RecordLRUHash, map[string]bool{hideAtomics: true}}} {
		t.Run(string(c.records), func(t *testing.T) {
			t.Parallel()
			if c.records == RecordTables && haveAtomics() != nil {
				t.Skipf("no record tables on this kernel: %v", haveAtomics())
			}
			socketMapsEmptiedAtDeath(t, c.records, c.hidden)
		})
	}
}

func socketMapsEmptiedAtDeath(t *testing.T, records Records, hidden map[string]bool) {
	ns := newNetns(t)
	c := startTracerHiding(t, Options{Filter: Filter{NetNS: ns.inode}}, hidden)
	if got := c.tr.Records(); got != records {
		t.Fatalf("records %s, want %s", got, records)
	}
	lfd, port := listenIn(t, ns, unix.AF_INET)
	// a socket of another namespace is filtered before it is tracked: no entry
	other := newNetns(t)
	olfd, _ := listenIn(t, other, unix.AF_INET)
	defer unix.Close(olfd)
	for range 50 {
		clientCloses(t, ns, unix.AF_INET, lfd, port)
		serverCloses(t, ns, unix.AF_INET, lfd, port)
	}
	c.waitFor(t, 5*time.Second, "100 timewait sockets", func(evs []Event) bool {
		return len(filter(evs, ofKind(KindTWEnter))) == 100
	})
	if n := entries(t, c.tr, twtraceMapSocks); n != 1 {
		t.Errorf("socks holds %d entries with only the listener alive, want 1", n)
	}
	if n := entries(t, c.tr, twtraceMapTws); n != 100 {
		t.Errorf("tws holds %d entries for 100 live timewait sockets", n)
	}
	unix.Close(lfd)
	ns.Destroy()
	c.waitFor(t, 10*time.Second, "every timewait socket dead", func(evs []Event) bool {
		return len(filter(evs, ofKind(KindTWExit))) == 100
	})
	if n, m := entries(t, c.tr, twtraceMapSocks), entries(t, c.tr, twtraceMapTws); n != 0 || m != 0 {
		t.Errorf("after every socket died: socks %d, tws %d entries, want 0 and 0", n, m)
	}
}
