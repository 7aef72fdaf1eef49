package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"time"
)

// watchTally counts what `twtrace watch -o json` streamed, line by line.
type watchTally struct {
	Kinds       map[string]uint64
	Transitions map[string]uint64 // "OLD->NEW"
	SentResets  map[string]uint64 // by reason ("" when none)
	RecvResets  uint64
	ExitsBy     map[string]uint64 // tw_exit by cause
	// tw_exit records whose lifetime or owner is unknown
	UnknownLifetime, UnknownOwner uint64
	// Orphans are the tuples of deaths reported with no lifetime that reconciliation did not
	// find (cause expired or killed): their birth was not reported
	Orphans map[twTuple]int
	Lost    uint64 // what "lost" records counted
	// Unattributed sums the unattributed records by family (events): counts the kernel made
	// with no event, found by reconciliation
	Unattributed map[string]uint64
	Ledger       twLedger
	DeathsAt     map[int64]int // tw_exit per 250 ms, by Unix time / 250 ms
}

// watchLine is the part of a JSON event record the tally reads.
type watchLine struct {
	TS        time.Time `json:"ts"`
	Kind      string    `json:"kind"`
	SAddr     string    `json:"saddr"`
	SPort     uint16    `json:"sport"`
	DAddr     string    `json:"daddr"`
	DPort     uint16    `json:"dport"`
	PID       uint32    `json:"pid"`
	Old       string    `json:"old"`
	New       string    `json:"new"`
	Lifetime  *int64    `json:"lifetime_ms"`
	Cause     string    `json:"cause"`
	Direction string    `json:"direction"`
	Reason    *string   `json:"reason"`
	Count     uint64    `json:"count"`
	Events    string    `json:"events"`
}

func newWatchTally() *watchTally {
	return &watchTally{Kinds: map[string]uint64{}, Transitions: map[string]uint64{}, SentResets: map[string]uint64{},
		ExitsBy: map[string]uint64{}, Ledger: twLedger{}, DeathsAt: map[int64]int{}, Unattributed: map[string]uint64{},
		Orphans: map[twTuple]int{}}
}

// read tallies every line of r; a line that is not a JSON record is an error.
func (w *watchTally) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l watchLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("not a JSON record: %q: %w", sc.Text(), err)
		}
		w.add(&l)
	}
	return sc.Err()
}

func (w *watchTally) add(l *watchLine) {
	w.Kinds[l.Kind]++
	tuple := twTuple{SAddr: l.SAddr, SPort: l.SPort, DAddr: l.DAddr, DPort: l.DPort}
	switch l.Kind {
	case "state":
		w.Transitions[l.Old+"->"+l.New]++
	case "tw_enter":
		w.Ledger.add(tuple, twMark{At: l.TS})
	case "tw_exit":
		w.Ledger.add(tuple, twMark{At: l.TS, Exit: true})
		w.ExitsBy[l.Cause]++
		w.DeathsAt[l.TS.UnixNano()/int64(250*time.Millisecond)]++
		if l.Lifetime == nil {
			w.UnknownLifetime++
			if l.Cause != "unseen" {
				w.Orphans[tuple]++
			}
		}
		if l.PID == 0 {
			w.UnknownOwner++
		}
	case "reset":
		if l.Direction == "recv" {
			w.RecvResets++
		} else if l.Reason != nil {
			w.SentResets[*l.Reason]++
		} else {
			w.SentResets[""]++
		}
	case "lost":
		w.Lost += l.Count
	case "unattributed":
		w.Unattributed[l.Events] += l.Count
	}
}

func (w *watchTally) sentResets() uint64 {
	var n uint64
	for _, v := range w.SentResets {
		n += v
	}
	return n
}

// exitSummary is what twtrace printed to stderr on exit.
type exitSummary struct {
	Decoded, Emitted, Lost, Missed, Undecodable uint64
	UnknownInOld, UnknownLifetimes              uint64
	OverflowsUnattributed, OverflowsInferred    uint64
	// what reconciliation with the kernel found
	Unseen, UnattributedOverflows, UnattributedBirths uint64
}

var (
	summaryLine    = regexp.MustCompile(`twtrace: (\d+) events \(of (\d+) the kernel wrote\), (\d+) lost .*?, (\d+) missed .*?, (\d+) undecodable; unknown: (\d+) in_old .*?, (\d+) lifetimes`)
	overflowLine   = regexp.MustCompile(`twtrace: overflows: (\d+) counted by the kernel at closes twtrace did not see .*?, (\d+) closes judged`)
	reconciledLine = regexp.MustCompile(`twtrace: reconciled with the kernel: (\d+) timewait deaths unseen .*?, (\d+) overflows and (\d+) timewait births counted`)
)

func parseExitSummary(stderr string) (exitSummary, error) {
	m := summaryLine.FindStringSubmatch(stderr)
	if m == nil {
		return exitSummary{}, fmt.Errorf("no summary line in:\n%s", stderr)
	}
	n := func(s string) uint64 { v, _ := strconv.ParseUint(s, 10, 64); return v }
	s := exitSummary{Decoded: n(m[1]), Emitted: n(m[2]), Lost: n(m[3]), Missed: n(m[4]), Undecodable: n(m[5]),
		UnknownInOld: n(m[6]), UnknownLifetimes: n(m[7])}
	if o := overflowLine.FindStringSubmatch(stderr); o != nil {
		s.OverflowsUnattributed, s.OverflowsInferred = n(o[1]), n(o[2])
	}
	if r := reconciledLine.FindStringSubmatch(stderr); r != nil {
		s.Unseen, s.UnattributedOverflows, s.UnattributedBirths = n(r[1]), n(r[2]), n(r[3])
	} else {
		return s, fmt.Errorf("no reconciliation line in:\n%s", stderr)
	}
	return s, nil
}

// loadView is the part of `twtrace timewait -o json` the load test reads.
type loadView struct {
	Complete  bool   `json:"complete"`
	Lost      uint64 `json:"lost"`
	Missed    uint64 `json:"missed"`
	Lifetimes []struct {
		Cause string `json:"cause"`
		Count uint64 `json:"count"`
	} `json:"lifetimes"`
	Namespaces []struct {
		NetNS        uint64  `json:"netns"`
		Live         *int64  `json:"live"`
		MaxTWBuckets *int64  `json:"max_tw_buckets"`
		Created      *uint64 `json:"created"`
		Overflows    *uint64 `json:"overflows"`
		CounterDelta *int64  `json:"overflow_counter_delta"`
		// reconciliation
		UnattributedOverflows uint64 `json:"unattributed_overflows"`
		UnattributedBirths    uint64 `json:"unattributed_births"`
		UnseenDeaths          uint64 `json:"unseen_deaths"`
	} `json:"namespaces"`
	Dests []struct {
		DPort    uint16   `json:"dport"`
		Live     int      `json:"live"`
		AtRisk   *bool    `json:"at_risk"`
		Steady   *float64 `json:"steady_state"`
		Reuse    *bool    `json:"tw_reuse"`
		Usable   *int     `json:"usable_ports"`
		Blocking *float64 `json:"blocking_ports"`
	} `json:"destinations"`
	Workloads []struct {
		Forecast *struct {
			Steady float64 `json:"steady_state"`
		} `json:"timewait_table_forecast"`
	} `json:"workloads"`
}

// readViews decodes every view `twtrace timewait` printed.
func readViews(r io.Reader) ([]loadView, error) {
	var out []loadView
	dec := json.NewDecoder(r)
	for dec.More() {
		var v loadView
		if err := dec.Decode(&v); err != nil {
			return out, fmt.Errorf("timewait view: %w", err)
		}
		out = append(out, v)
	}
	return out, nil
}
