package window

import (
	"math/bits"
	"math/rand/v2"
	"slices"
	"time"
)

// maxSamples bounds the values a Histogram keeps for percentiles; beyond it they are a
// uniform random sample (reservoir), and Exact says so.
const maxSamples = 100_000

// Histogram counts durations in log2 millisecond buckets (bcc style) and keeps enough
// samples for min, percentiles and max.
type Histogram struct {
	// Buckets[i] counts values in [2^(i-1), 2^i) ms; Buckets[0] counts values under 1 ms.
	Buckets  [40]uint64
	Count    uint64
	Min, Max time.Duration
	samples  []time.Duration
	sorted   bool
}

// Add records one duration.
func (h *Histogram) Add(d time.Duration) {
	ms := uint64(d / time.Millisecond)
	h.Buckets[min(bits.Len64(ms), len(h.Buckets)-1)]++
	if h.Count == 0 || d < h.Min {
		h.Min = d
	}
	if d > h.Max {
		h.Max = d
	}
	h.Count++
	h.sorted = false
	if len(h.samples) < maxSamples {
		h.samples = append(h.samples, d)
	} else if i := rand.Uint64N(h.Count); i < maxSamples {
		h.samples[i] = d
	}
}

// Exact reports whether percentiles come from every value rather than a sample.
func (h *Histogram) Exact() bool { return h.Count <= maxSamples }

// Percentile returns the value below which p (0..1) of the values fall (nearest rank).
func (h *Histogram) Percentile(p float64) time.Duration {
	if len(h.samples) == 0 {
		return 0
	}
	if !h.sorted {
		slices.Sort(h.samples)
		h.sorted = true
	}
	i := int(p*float64(len(h.samples))+0.999999) - 1
	return h.samples[max(0, min(i, len(h.samples)-1))]
}

// Clone copies the histogram and its samples.
func (h *Histogram) Clone() *Histogram {
	c := *h
	c.samples = slices.Clone(h.samples)
	return &c
}
