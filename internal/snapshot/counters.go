package snapshot

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/twtrace/twtrace/internal/netns"
)

// Counters are a namespace's TCP counters from /proc/net/netstat and /proc/net/snmp, by
// the names nstat gives them: "TcpExtTCPTimeWaitOverflow", "TcpActiveOpens".
type Counters map[string]uint64

// Delta is how much counter name grew since base, and whether both readings have it. A
// counter base lacks started at 0: its namespace was born since.
func (c Counters) Delta(base Counters, name string) (int64, bool) {
	now, ok := c[name]
	if !ok {
		return 0, false
	}
	return int64(now - base[name]), true
}

// ReadCounters reads netstat and snmp from dir (/proc/thread-self/net inside a namespace).
func ReadCounters(dir string) (Counters, error) {
	c := Counters{}
	for _, file := range []string{"netstat", "snmp"} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return nil, err
		}
		if err := c.parse(b); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, file), err)
		}
	}
	return c, nil
}

// parse reads pairs of lines, "Prefix: name name ..." then "Prefix: value value ...".
func (c Counters) parse(b []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		keys := strings.Fields(sc.Text())
		if !sc.Scan() {
			return fmt.Errorf("names without values: %q", keys)
		}
		vals := strings.Fields(sc.Text())
		if len(keys) == 0 || len(vals) != len(keys) || keys[0] != vals[0] || !strings.HasSuffix(keys[0], ":") {
			return fmt.Errorf("malformed pair of lines starting %q", keys)
		}
		prefix := strings.TrimSuffix(keys[0], ":")
		for i := 1; i < len(keys); i++ {
			if v, err := strconv.ParseUint(vals[i], 10, 64); err == nil { // Tcp MaxConn is -1: not a counter
				c[prefix+keys[i]] = v
			}
		}
	}
	return sc.Err()
}

// CountersOf reads a namespace's counters.
func CountersOf(ns netns.Netns) (c Counters, err error) {
	err = ns.Do(func() error {
		c, err = ReadCounters("/proc/thread-self/net")
		return err
	})
	return c, err
}
