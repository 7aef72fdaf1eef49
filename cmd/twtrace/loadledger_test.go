package main

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// The load test's ledger of timewait sockets: the births and deaths twtrace reported,
// paired per tuple, and the sockets ss saw, each of which must lie within one of them.

// twTuple names a timewait socket; over a run the same tuple is reused many times.
type twTuple struct {
	SAddr, DAddr string
	SPort, DPort uint16
}

func (u twTuple) String() string {
	return fmt.Sprintf("%s:%d -> %s:%d", u.SAddr, u.SPort, u.DAddr, u.DPort)
}

// twMark is a tw_enter (Exit false) or a tw_exit.
type twMark struct {
	At   time.Time
	Exit bool
}

// twSpan is one timewait socket's life as reported; Exit is zero while it lives.
type twSpan struct{ Enter, Exit time.Time }

// twLedger collects births and deaths per tuple.
type twLedger map[twTuple][]twMark

func (l twLedger) add(u twTuple, m twMark) { l[u] = append(l[u], m) }

// handoffSkew is how far a death's record may precede its birth's: a socket killed
// while its full socket is still closing dies before the close that reports its birth.
const handoffSkew = 10 * time.Millisecond

// spans pairs each tuple's births and deaths in time order. Two births in a row mean a
// death went unreported, a death without a birth a birth did; both are problems.
func (l twLedger) spans() (map[twTuple][]twSpan, []string) {
	out := map[twTuple][]twSpan{}
	var problems []string
	for u, marks := range l {
		marks = slices.Clone(marks)
		slices.SortStableFunc(marks, func(a, b twMark) int { return a.At.Compare(b.At) })
		var spans []twSpan
		open := false
		for i := 0; i < len(marks); i++ {
			m := marks[i]
			switch {
			case !m.Exit && open:
				problems = append(problems, fmt.Sprintf("%s: born again at %s with no death since %s", u, clock(m.At), clock(spans[len(spans)-1].Enter)))
				spans = append(spans, twSpan{Enter: m.At})
			case !m.Exit:
				spans = append(spans, twSpan{Enter: m.At})
				open = true
			case open:
				spans[len(spans)-1].Exit = m.At
				open = false
			case i+1 < len(marks) && !marks[i+1].Exit && marks[i+1].At.Sub(m.At) <= handoffSkew:
				spans = append(spans, twSpan{Enter: marks[i+1].At, Exit: marks[i+1].At})
				i++
			default:
				problems = append(problems, fmt.Sprintf("%s: died at %s with no birth before", u, clock(m.At)))
			}
		}
		out[u] = spans
	}
	slices.Sort(problems)
	return out, problems
}

// ssPoll is one ss listing of the namespace's timewait sockets, taken between From and To.
type ssPoll struct {
	From, To time.Time
	Tuples   []twTuple
}

// ssSlack allows for the clocks of ss's polls and twtrace's timestamps.
const ssSlack = 50 * time.Millisecond

// ssCoverage checks that every timewait socket ss listed lies within a reported life,
// and counts the lives ss saw and how many of them ended.
func ssCoverage(spans map[twTuple][]twSpan, polls []ssPoll) (seen, ended int, problems []string) {
	type life struct {
		u twTuple
		i int
	}
	lives := map[life]bool{}
	for _, p := range polls {
		for _, u := range p.Tuples {
			i := slices.IndexFunc(spans[u], func(s twSpan) bool {
				return !s.Enter.After(p.To.Add(ssSlack)) && (s.Exit.IsZero() || !s.Exit.Before(p.From.Add(-ssSlack)))
			})
			if i < 0 {
				problems = append(problems, fmt.Sprintf("%s: listed by ss at %s, outside every life twtrace reported", u, clock(p.From)))
				continue
			}
			lives[life{u, i}] = true
		}
	}
	for l := range lives {
		seen++
		if !spans[l.u][l.i].Exit.IsZero() {
			ended++
		}
	}
	return seen, ended, problems
}

func clock(t time.Time) string { return t.Format("15:04:05.000000") }

func TestLedgerPairsBirthsAndDeaths(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	a := twTuple{"127.0.0.1", "127.0.0.1", 40000, 8080}
	b := twTuple{"127.0.0.1", "127.0.0.1", 40001, 8080}
	for _, tc := range []struct {
		name     string
		marks    map[twTuple][]twMark
		spans    int
		problems int
	}{
		{"births and deaths alternate", map[twTuple][]twMark{
			a: {{at(0), false}, {at(100), true}, {at(200), false}, {at(60300), true}},
			b: {{at(5), false}, {at(61000), true}},
		}, 3, 0},
		{"out of order in the stream", map[twTuple][]twMark{a: {{at(100), true}, {at(0), false}}}, 1, 0},
		{"killed during its hand-off", map[twTuple][]twMark{a: {{at(3), true}, {at(4), false}}}, 1, 0},
		{"a death missing", map[twTuple][]twMark{a: {{at(0), false}, {at(200), false}, {at(300), true}}}, 2, 1},
		{"a birth missing", map[twTuple][]twMark{a: {{at(0), false}, {at(100), true}, {at(300), true}}}, 1, 1},
		{"alive at the end", map[twTuple][]twMark{a: {{at(0), false}}}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := twLedger{}
			for u, ms := range tc.marks {
				for _, m := range ms {
					l.add(u, m)
				}
			}
			spans, problems := l.spans()
			n := 0
			for _, s := range spans {
				n += len(s)
			}
			if n != tc.spans || len(problems) != tc.problems {
				t.Errorf("%d lives and problems %q, want %d lives and %d problems", n, problems, tc.spans, tc.problems)
			}
		})
	}
}

func TestSSCoverage(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	a := twTuple{"127.0.0.1", "127.0.0.1", 40000, 8080}
	b := twTuple{"127.0.0.1", "127.0.0.1", 40001, 8080}
	spans := map[twTuple][]twSpan{
		a: {{at(0), at(1000)}, {at(2000), at(62000)}},
		b: {{at(500), time.Time{}}},
	}
	poll := func(ms int, us ...twTuple) ssPoll { return ssPoll{From: at(ms), To: at(ms + 5), Tuples: us} }

	seen, ended, problems := ssCoverage(spans, []ssPoll{poll(250, a), poll(500, a, b), poll(2250, a), poll(2500, a, b)})
	if seen != 3 || ended != 2 || len(problems) != 0 {
		t.Errorf("seen %d, ended %d, problems %q: want 3 lives seen, 2 ended, no problem", seen, ended, problems)
	}
	// a listed between its two lives: a life twtrace never reported
	if _, _, problems := ssCoverage(spans, []ssPoll{poll(1500, a)}); len(problems) != 1 {
		t.Errorf("a socket outside every reported life must be a problem, got %q", problems)
	}
	c := twTuple{"127.0.0.1", "127.0.0.1", 40002, 8080}
	if _, _, problems := ssCoverage(spans, []ssPoll{poll(100, c)}); len(problems) != 1 {
		t.Errorf("a tuple twtrace never reported must be a problem, got %q", problems)
	}
}
