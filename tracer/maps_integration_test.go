package tracer

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// entries counts a hash map's keys.
func entries(t *testing.T, tr *Tracer, name string) int {
	t.Helper()
	var key, next uint64
	n := 0
	var cur any
	for tr.coll.Maps[name].NextKey(cur, &next) == nil {
		n++
		key = next
		cur = &key
	}
	return n
}

// socketRecords counts the full sockets holding a record, in whichever storage tr uses:
// socket-local storage has no keys to walk, so a map iterator (test_count_sock_store)
// writes a byte per socket. ok is false where this kernel refuses to load iterators.
func socketRecords(t *testing.T, tr *Tracer) (n int, ok bool) {
	t.Helper()
	if tr.storage == StorageHash {
		return entries(t, tr, twtraceMapSocks), true
	}
	spec, err := loadTwtrace()
	must(t, "load spec", err)
	prog := spec.Programs[twtraceProgTestCountSockStore]
	coll, err := ebpf.NewCollectionWithOptions(&ebpf.CollectionSpec{
		Programs: map[string]*ebpf.ProgramSpec{prog.Name: prog},
		Maps:     map[string]*ebpf.MapSpec{twtraceMapSockStore: spec.Maps[twtraceMapSockStore]},
		Types:    spec.Types,
	}, ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{twtraceMapSockStore: tr.coll.Maps[twtraceMapSockStore]}})
	if errors.Is(err, unix.EPERM) {
		return 0, false
	}
	must(t, "load the iterator", err)
	defer coll.Close()
	l, err := link.AttachIter(link.IterOptions{Program: coll.Programs[prog.Name], Map: tr.coll.Maps[twtraceMapSockStore]})
	must(t, "attach the iterator", err)
	defer l.Close()
	r, err := l.Open()
	must(t, "open the iterator", err)
	defer r.Close()
	b, err := io.ReadAll(r)
	must(t, "read the iterator", err)
	return len(b), true
}

// recordOf reads the socket-local record of the socket behind fd (from userspace, such
// a map is keyed by a socket descriptor).
func recordOf(t *testing.T, tr *Tracer, fd int) (twtraceSockInfo, bool) {
	t.Helper()
	var si twtraceSockInfo
	err := tr.coll.Maps[twtraceMapSockStore].Lookup(uint32(fd), &si)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return si, false
	}
	must(t, "look up a socket's record", err)
	return si, true
}

// waitRecords waits until n sockets hold a record: socket-local storage goes when the
// kernel frees the socket, a moment after its CLOSE.
func waitRecords(t *testing.T, tr *Tracer, n int, what string) {
	t.Helper()
	got := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var ok bool
		if got, ok = socketRecords(t, tr); !ok {
			t.Logf("%s: not counted, this kernel refuses map iterators (EPERM)", what)
			return
		}
		if got == n {
			return
		}
	}
	t.Errorf("%s: %d sockets hold a record (%s), want %d", what, got, tr.storage, n)
}

// The per-socket records are emptied at socket death, in both storages: after 100
// connections in both close orders and the namespace's exit, nothing is left. The
// namespace filter keeps every other socket of the machine out of them (a listener in
// another namespace proves it), so the count is exact.
func TestSocketMapsEmptiedAtDeath(t *testing.T) {
	requireRoot(t)
	for _, storage := range []Storage{StorageSocket, StorageHash} {
		t.Run(string(storage), func(t *testing.T) {
			t.Parallel()
			ns := newNetns(t)
			c := startStorage(t, Options{Filter: Filter{NetNS: ns.inode}}, storage)
			lfd, port := listenIn(t, ns, unix.AF_INET)
			// a socket of another namespace is filtered before it is tracked: no record
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
			waitRecords(t, c.tr, 1, "only the listener alive")
			if storage == StorageSocket {
				if si, ok := recordOf(t, c.tr, lfd); !ok || si.Owner.Pid != uint32(os.Getpid()) {
					t.Errorf("the listener's record: %+v (found %v), want one owned by pid %d", si, ok, os.Getpid())
				}
				if si, ok := recordOf(t, c.tr, olfd); ok {
					t.Errorf("a listener of a namespace filtered out has a record: %+v", si)
				}
			}
			if n := entries(t, c.tr, twtraceMapTws); n != 100 {
				t.Errorf("tws holds %d entries for 100 live timewait sockets", n)
			}
			unix.Close(lfd)
			ns.Destroy()
			c.waitFor(t, 10*time.Second, "every timewait socket dead", func(evs []Event) bool {
				return len(filter(evs, ofKind(KindTWExit))) == 100
			})
			waitRecords(t, c.tr, 0, "every socket dead")
			if m := entries(t, c.tr, twtraceMapTws); m != 0 {
				t.Errorf("after every socket died: tws %d entries, want 0", m)
			}
		})
	}
}

// startStorage starts a tracer with the given per-socket storage, skipping where this
// kernel has no socket-local storage for tracing programs.
func startStorage(t *testing.T, opts Options, storage Storage) *collector {
	t.Helper()
	var hidden map[string]bool
	if storage == StorageHash {
		hidden = map[string]bool{hideSocketStorage: true}
	}
	c := startTracerHiding(t, opts, hidden)
	if got, why := c.tr.Storage(); got != storage {
		if storage == StorageSocket {
			t.Skipf("this kernel gives tracing programs no socket-local storage: %s", why)
		}
		t.Fatalf("storage %s, want %s", got, storage)
	}
	return c
}
