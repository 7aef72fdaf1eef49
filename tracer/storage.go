package tracer

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Storage is where the state hook keeps each full socket's record (since when it is in
// its state, its owner).
type Storage string

const (
	// StorageSocket is socket-local storage (BPF_MAP_TYPE_SK_STORAGE, from tracing programs
	// since Linux 5.11): found from the socket itself, freed with it.
	StorageSocket Storage = "socket-local storage"
	// StorageHash is an LRU hash keyed by the socket's address, of a fixed size.
	StorageHash Storage = "LRU hash"
)

// hideSocketStorage, in TWTRACE_TEST_HIDE, makes twtrace take the hash as on 5.10.
const hideSocketStorage = "sk_storage"

// chooseStorage sets the state hook's storage: socket-local storage if the state hook loads
// with it here, else the hash, and says why not.
func chooseStorage(spec *ebpf.CollectionSpec, opts ebpf.CollectionOptions, hidden map[string]bool) (Storage, string, error) {
	why := "hidden (" + testHideEnv + ")"
	if !hidden[hideSocketStorage] {
		if err := set(spec, map[string]any{twtraceVarCfgSkStorage: true}); err != nil {
			return "", "", err
		}
		err := try(spec, opts, implementations[HookState][0])
		if err == nil {
			spec.Maps[twtraceMapSocks].MaxEntries = 1 // unused
			return StorageSocket, "", nil
		}
		why = err.Error()
	}
	if err := set(spec, map[string]any{twtraceVarCfgSkStorage: false}); err != nil {
		return "", "", err
	}
	return StorageHash, fmt.Sprintf("socket-local storage not usable here: %s", why), nil
}
