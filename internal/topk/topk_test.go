package topk

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func activity(l *Limiter[string], counts map[string]int) {
	for key, n := range counts {
		for range n {
			l.Member(key)
		}
	}
}

func TestLimiterAdmitsTheBusiest(t *testing.T) {
	l := New[string](2, 10*time.Minute)
	now := time.Unix(0, 0)
	if l.Member("a") {
		t.Fatal("a key is a member before the first rebalance")
	}
	activity(l, map[string]int{"a": 5, "b": 50, "c": 20, "d": 1})
	left, joined := l.Rebalance(now)
	if len(left) != 0 || !slices.Equal(joined, []string{"b", "c"}) {
		t.Fatalf("left %v joined %v", left, joined)
	}
	if !l.Member("b") || l.Member("a") {
		t.Fatal("membership not applied")
	}
}

func TestLimiterHysteresis(t *testing.T) {
	l := New[string](2, 10*time.Minute)
	now := time.Unix(0, 0)
	activity(l, map[string]int{"a": 10, "b": 10})
	l.Rebalance(now)
	// a newcomer slightly busier than a member does not displace it
	activity(l, map[string]int{"a": 10, "b": 10, "c": 15})
	if left, joined := l.Rebalance(now.Add(time.Minute)); len(left)+len(joined) != 0 {
		t.Fatalf("flapped: left %v joined %v", left, joined)
	}
	// twice as busy as the quietest member does
	activity(l, map[string]int{"a": 10, "b": 5, "c": 10})
	left, joined := l.Rebalance(now.Add(2 * time.Minute))
	if !slices.Equal(left, []string{"b"}) || !slices.Equal(joined, []string{"c"}) {
		t.Fatalf("left %v joined %v", left, joined)
	}
}

func TestLimiterIdleMembersLeave(t *testing.T) {
	l := New[string](3, 10*time.Minute)
	now := time.Unix(0, 0)
	activity(l, map[string]int{"a": 1, "b": 1})
	l.Rebalance(now)
	activity(l, map[string]int{"a": 1})
	l.Rebalance(now.Add(9 * time.Minute))
	activity(l, map[string]int{"a": 1})
	left, _ := l.Rebalance(now.Add(10 * time.Minute))
	if !slices.Equal(left, []string{"b"}) || !slices.Equal(l.Members(), []string{"a"}) {
		t.Fatalf("left %v members %v", left, l.Members())
	}
}

// However many keys, at most K have series: the cardinality bound the README promises.
func TestLimiterBound(t *testing.T) {
	const k = 5
	l := New[string](k, time.Minute)
	now := time.Unix(0, 0)
	for round := range 50 {
		for i := range 1000 {
			l.Member(fmt.Sprintf("w%d", (i*7+round*13)%3000))
		}
		now = now.Add(15 * time.Second)
		l.Rebalance(now)
		if n := len(l.Members()); n > k {
			t.Fatalf("round %d: %d members", round, n)
		}
	}
}

func TestSplit(t *testing.T) {
	top, other := Split(map[string]float64{"a": 3, "b": 9, "c": 1, "d": 9}, 2)
	if len(top) != 2 || top["b"] != 9 || top["d"] != 9 || other != 4 {
		t.Fatalf("top %v other %v", top, other)
	}
}

func BenchmarkMember(b *testing.B) {
	l := New[string](20, time.Minute)
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("shop/cart-%d", i)
	}
	activity(l, map[string]int{keys[0]: 2, keys[1]: 2})
	l.Rebalance(time.Unix(0, 0))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		l.Member(keys[i%len(keys)])
	}
}

// Count weighs activity: one call with n is n calls of Member.
func TestLimiterCountWeighs(t *testing.T) {
	l := New[string](1, 10*time.Minute)
	l.Count("heavy", 100)
	for range 10 {
		l.Member("chatty")
	}
	if _, joined := l.Rebalance(time.Unix(0, 0)); !slices.Equal(joined, []string{"heavy"}) {
		t.Fatalf("joined %v, want the key with 100 units in one call", joined)
	}
	if !l.Count("heavy", 3) || l.Count("chatty", 3) {
		t.Error("membership not applied to Count")
	}
}
