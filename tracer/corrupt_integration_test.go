package tracer

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// writeRecord puts a record of size bytes, each fill, into the tracer's ring buffer from
// a program of the test's own (the reader cannot tell it from twtrace's).
func writeRecord(t *testing.T, tr *Tracer, size int16, fill byte) {
	t.Helper()
	var insns asm.Instructions
	word := int32(fill) * 0x01010101
	for off := int16(4); off <= size+7; off += 4 { // the kernel has no 64-bit store of an immediate
		insns = append(insns, asm.StoreImm(asm.RFP, -off, int64(word), asm.Word))
	}
	insns = append(insns,
		asm.LoadMapPtr(asm.R1, tr.coll.Maps[twtraceMapEvents].FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -int32((size+7)/8*8)),
		asm.Mov.Imm(asm.R3, int32(size)),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: insns})
	must(t, "load the record writer", err)
	defer p.Close()
	ret, err := p.Run(&ebpf.RunOptions{Data: make([]byte, 14)}) // an Ethernet header's worth
	must(t, "run the record writer", err)
	if ret != 0 {
		t.Fatalf("record writer returned %d", ret)
	}
}

// Records the decoder cannot trust (truncated, impossible kind or family) are counted
// and skipped: the events around them arrive, exactly.
func TestCorruptRecordsCountedAndSkipped(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	tr, err := newTracer(Options{Families: FamilyState, Backend: BackendAuto, Filter: Filter{NetNS: ns.inode}}, nil)
	must(t, "start tracer", err)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var evs []Event
	done := make(chan error, 1)
	go func() {
		done <- tr.Run(ctx, func(e *Event) {
			mu.Lock()
			evs = append(evs, *e)
			mu.Unlock()
		}, nil)
	}()
	defer func() { // Run must have returned before Close
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		tr.Close()
	}()

	writeRecord(t, tr, 16, 0)                  // truncated
	writeRecord(t, tr, int16(RecordSize), 0)   // kind 0, family 0
	lfd, port := listenIn(t, ns, unix.AF_INET) // 1 event
	cport := clientCloses(t, ns, unix.AF_INET, lfd, port)
	writeRecord(t, tr, int16(RecordSize), 0xff) // kind 255
	unix.Close(lfd)                             // 1 event

	client, server := clientSocket(cport, port), acceptedSocket(port, cport)
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := tr.Stats()
		must(t, "stats", err)
		mu.Lock()
		n := len(evs)
		got := append([]Event(nil), evs...)
		mu.Unlock()
		if s.Corrupt == 3 && n == 12 {
			checkSequence(t, "client", filter(got, client), []string{"CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", "ESTABLISHED->FIN_WAIT1", "FIN_WAIT1->FIN_WAIT2", "FIN_WAIT2->TIME_WAIT"})
			checkSequence(t, "server", filter(got, server), []string{"LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED", "ESTABLISHED->CLOSE_WAIT", "CLOSE_WAIT->LAST_ACK", "LAST_ACK->CLOSE"})
			if s.Decoded != s.Emitted || s.Decoded != 12 || s.Lost != 0 {
				t.Errorf("decoded %d of %d written, %d lost; want the 12 twtrace wrote, none lost", s.Decoded, s.Emitted, s.Lost)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s: %d corrupt records counted (want 3), %d events (want 12):\n%s", s.Corrupt, n, dump(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
