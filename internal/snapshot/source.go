package snapshot

import (
	"errors"

	"github.com/twtrace/twtrace/internal/netns"
)

// Source takes snapshots of namespaces by inode, with the same options each time, finding
// them through a cached index: no /proc walk per snapshot. Safe for concurrent use.
type Source struct {
	index *netns.Index
	opts  Options
}

// NewSource returns a source whose snapshots keep what opts says.
func NewSource(opts Options) *Source {
	return &Source{index: netns.NewIndex(), opts: opts}
}

// Take reads the namespace with this inode now.
func (s *Source) Take(inode uint32) (*Namespace, error) {
	return s.find(inode, func(ns netns.Netns) (*Namespace, error) { return Take(ns, s.opts) })
}

// Settings reads the namespace's settings and counters now, without its sockets.
func (s *Source) Settings(inode uint32) (*Namespace, error) {
	return s.find(inode, TakeSettings)
}

func (s *Source) find(inode uint32, read func(netns.Netns) (*Namespace, error)) (*Namespace, error) {
	for attempt := 0; ; attempt++ {
		ns, err := s.index.Find(inode)
		if err != nil {
			return nil, err
		}
		n, err := read(ns)
		if errors.Is(err, netns.ErrStale) && attempt == 0 { // its process exited since Find checked it
			continue
		}
		return n, err
	}
}

// Namespaces walks /proc for every namespace twtrace may open.
func (s *Source) Namespaces() ([]netns.Netns, error) { return s.index.All() }

// Index is the source's namespace index.
func (s *Source) Index() *netns.Index { return s.index }

// Baselines reads the counters of these namespaces, or of every namespace when inodes is
// empty, without dumping sockets: the start of a window, for deltas. A namespace that
// cannot be read is left out.
func (s *Source) Baselines(inodes []uint32) map[uint32]Counters {
	var namespaces []netns.Netns
	if len(inodes) == 0 {
		namespaces, _ = s.index.All()
	}
	for _, inode := range inodes {
		if ns, err := s.index.Find(inode); err == nil {
			namespaces = append(namespaces, ns)
		}
	}
	out := map[uint32]Counters{}
	for _, ns := range namespaces {
		if c, err := CountersOf(ns); err == nil {
			out[ns.Inode] = c
		}
	}
	return out
}
