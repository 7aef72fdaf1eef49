package tracer

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ReadNetstat reads one TcpExt counter (as nstat names it without the prefix, e.g.
// "TCPTimeWaitOverflow") from a /proc/net/netstat file.
func ReadNetstat(path, name string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		keys := strings.Fields(sc.Text())
		if !sc.Scan() {
			break
		}
		vals := strings.Fields(sc.Text())
		if len(keys) == 0 || keys[0] != "TcpExt:" || len(vals) != len(keys) {
			continue
		}
		for i, k := range keys {
			if k == name {
				return strconv.ParseUint(vals[i], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no TcpExt counter %s in %s", name, path)
}

// Netstat reads a TcpExt counter of the namespace.
func (ns Netns) Netstat(name string) (v uint64, err error) {
	err = ns.Do(func() error {
		v, err = ReadNetstat("/proc/thread-self/net/netstat", name)
		return err
	})
	return v, err
}
