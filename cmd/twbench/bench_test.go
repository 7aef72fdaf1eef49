package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReplaceSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "B.md")
	os.WriteFile(path, []byte("# Benchmarks\n\nhand-written\n"), 0o644)
	if err := replaceSection(path, "make bench", "first\n"); err != nil {
		t.Fatal(err)
	}
	if err := replaceSection(path, "make bench", "second\n"); err != nil {
		t.Fatal(err)
	}
	want := "# Benchmarks\n\nhand-written\n\n<!-- make bench: begin -->\nsecond\n<!-- make bench: end -->\n"
	if got, _ := os.ReadFile(path); string(got) != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestFlat(t *testing.T) {
	for _, tt := range []struct {
		name   string
		values []float64
		slack  float64
		want   bool
	}{
		{"steady", []float64{100, 102, 99, 101, 100, 103, 100, 101}, 0, true},
		{"growing", []float64{100, 110, 120, 130, 140, 150, 160, 170}, 0, false},
		{"small counts wobble within slack", []float64{3, 9, 4, 12, 5, 20, 8, 30}, 64, true},
		{"shrinking", []float64{200, 150, 100, 90, 80, 70, 60, 50}, 0, true},
	} {
		if _, _, got := flat(tt.values, tt.slack); got != tt.want {
			t.Errorf("%s: flat = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestLostParsers(t *testing.T) {
	twtrace := twtraceTool("t", "twtrace").lost
	if n, ok := twtrace("twtrace: 10 events (of 12 the kernel wrote), 7 lost [3 4], 0 missed"); !ok || n != 7 {
		t.Errorf("twtrace summary: %d %v, want 7 true", n, ok)
	}
	tcpstates := tcpstatesTool("tcpstates").lost
	if n, ok := tcpstates("lost 5 events on CPU #0\nlost 6 events on CPU #1\n"); !ok || n != 11 {
		t.Errorf("tcpstates: %d %v, want 11 true", n, ok)
	}
	if _, ok := tcpstates("nothing lost\n"); ok {
		t.Error("tcpstates without loss lines should report none")
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
}
