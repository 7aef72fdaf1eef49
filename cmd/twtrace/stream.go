package main

import (
	"encoding/json"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

// The JSON stream's own records, around the events: start and end frame a recording, so
// that a replay (--input) tells "none seen" from "not traced" and knows the window.

// streamFilter is the filter a recording was made with; zero values are left out.
type streamFilter struct {
	Port   uint16 `json:"port,omitempty"`
	SPort  uint16 `json:"sport,omitempty"`
	DPort  uint16 `json:"dport,omitempty"`
	Addr   string `json:"addr,omitempty"`
	PID    uint32 `json:"pid,omitempty"`
	NetNS  uint32 `json:"netns,omitempty"`
	Family uint8  `json:"family,omitempty"`
}

type startRecord struct {
	TS     string       `json:"ts"`
	Kind   string       `json:"kind"` // "start"
	Events string       `json:"events"`
	Filter streamFilter `json:"filter"`
}

type endRecord struct {
	TS          string `json:"ts"`
	Kind        string `json:"kind"` // "end"
	Decoded     uint64 `json:"decoded"`
	Written     uint64 `json:"written"`
	Lost        uint64 `json:"lost"`
	Missed      uint64 `json:"missed"`
	Filtered    uint64 `json:"filtered"`
	Undecodable uint64 `json:"undecodable"`
}

// appendStart writes the first record: when tracing started, the families traced, the filter.
func appendStart(b []byte, now time.Time, traced tracer.Families, f tracer.Filter) []byte {
	r := startRecord{TS: now.UTC().Format(time.RFC3339Nano), Kind: "start", Events: traced.String(),
		Filter: streamFilter{Port: f.Port, SPort: f.SPort, DPort: f.DPort, PID: f.PID, NetNS: f.NetNS, Family: f.Family}}
	if f.Addr.IsValid() {
		r.Filter.Addr = f.Addr.String()
	}
	return appendRecord(b, r)
}

// appendEnd writes the last record: when tracing stopped, and the counters of the summary.
func appendEnd(b []byte, now time.Time, s tracer.Stats) []byte {
	return appendRecord(b, endRecord{TS: now.UTC().Format(time.RFC3339Nano), Kind: "end", Decoded: s.Decoded,
		Written: s.Emitted, Lost: s.Lost, Missed: s.Missed, Filtered: s.Filtered, Undecodable: s.Corrupt})
}

func appendRecord(b []byte, r any) []byte {
	j, _ := json.Marshal(r) // plain structs: never fails
	return append(append(b, j...), '\n')
}
