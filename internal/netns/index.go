package netns

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// forgetMissing is how long a namespace a walk did not find stays unfound without another
// walk: a namespace that died is asked for at every scrape, and its inode number may be
// given to a new namespace later.
const forgetMissing = time.Minute

// Index finds namespaces by inode. It walks /proc only on a miss: a namespace it knows is
// checked with one stat of its file, one it looked for in vain is not looked for again
// for a minute. Safe for concurrent use.
type Index struct {
	mu      sync.Mutex
	known   map[uint32]Netns
	missing map[uint32]time.Time // inode -> when a walk did not find it
	denied  int                  // processes whose namespace the last walk could not open
	walks   int
}

// NewIndex returns an empty index: the first lookup walks /proc.
func NewIndex() *Index {
	return &Index{known: map[uint32]Netns{}, missing: map[uint32]time.Time{}}
}

// All walks /proc and /run/netns and lists every network namespace a process or a name
// holds, among those twtrace may open (another user's process's needs CAP_SYS_PTRACE).
func (ix *Index) All() ([]Netns, error) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if err := ix.walk(); err != nil {
		return nil, err
	}
	out := make([]Netns, 0, len(ix.known))
	for _, ns := range ix.known {
		out = append(out, ns)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Inode < out[j].Inode })
	return out, nil
}

// Find returns the namespace with this inode.
func (ix *Index) Find(inode uint32) (Netns, error) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ns, ok := ix.known[inode]; ok {
		if names(ns.Path, inode) {
			return ns, nil
		}
		delete(ix.known, inode)
	}
	if since, ok := ix.missing[inode]; !ok || time.Since(since) > forgetMissing {
		if err := ix.walk(); err != nil {
			return Netns{}, err
		}
	}
	if ns, ok := ix.known[inode]; ok {
		return ns, nil
	}
	ix.missing[inode] = time.Now()
	if ix.denied > 0 {
		return Netns{}, fmt.Errorf("no network namespace with inode %d among those twtrace may open: "+
			"the namespaces of %d processes of other users need CAP_SYS_PTRACE", inode, ix.denied)
	}
	return Netns{}, fmt.Errorf("no network namespace with inode %d (no process or /run/netns name holds it)", inode)
}

// Walks says how often the index has walked /proc.
func (ix *Index) Walks() int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.walks
}

// walk rebuilds the index from /proc/*/ns/net and /run/netns/*.
func (ix *Index) walk() error {
	ix.walks++
	procs, err := filepath.Glob("/proc/[0-9]*") // not */ns/net: Glob would skip the ns it may not list
	if err != nil {
		return err
	}
	named, _ := filepath.Glob("/run/netns/*")
	paths := make([]string, 0, len(procs)+len(named))
	for _, p := range procs {
		paths = append(paths, p+"/ns/net")
	}
	paths = append(paths, named...)
	known, denied := map[uint32]Netns{}, 0
	for _, path := range paths {
		var st unix.Stat_t
		switch err := unix.Stat(path, &st); {
		case errors.Is(err, unix.EACCES):
			denied++
		case err == nil:
			if _, ok := known[uint32(st.Ino)]; !ok {
				known[uint32(st.Ino)] = Netns{Inode: uint32(st.Ino), Path: path}
			}
		}
	}
	now := time.Now()
	for inode := range ix.missing {
		if _, found := known[inode]; found || now.Sub(ix.missing[inode]) > forgetMissing {
			delete(ix.missing, inode)
		}
	}
	ix.known, ix.denied = known, denied
	return nil
}

// names reports whether path still opens the namespace inode.
func names(path string, inode uint32) bool {
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil && uint32(st.Ino) == inode
}
