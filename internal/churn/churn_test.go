package churn

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A run with a connection limit makes exactly that many connections, in every close
// order, inside a namespace of its own, which is not the caller's; aborted ones leave no
// TIME_WAIT socket.
func TestConnectionsInPrivateNetns(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv("TWTRACE_UNIT_ONLY") != "" {
		t.Skip("needs root (and not make test-unit): creates a network namespace")
	}
	var self unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		t.Fatal(err)
	}
	for _, order := range []string{"client", "server", "abort"} {
		ns, err := NewNetns()
		if err != nil {
			t.Fatal(err)
		}
		res, err := ns.Run(Config{Clients: 3, CloseFirst: order, Family: 4, Payload: 64, Connections: 101, Finish: true})
		if err == nil {
			err = ns.AwaitQuiet(5 * time.Second)
		}
		tw, busy, serr := ns.sockets()
		ns.Close()
		if err != nil || serr != nil {
			t.Fatalf("%s: %v %v", order, err, serr)
		}
		wantTW := 101
		if order == "abort" {
			wantTW = 0
		}
		if tw != wantTW || busy != 0 {
			t.Errorf("%s closes first: %d TIME_WAIT sockets and %d others left, want %d TIME_WAIT and nothing else", order, tw, busy, wantTW)
		}
		if res.Connections != 101 || len(res.Errors) != 0 || res.Unserved != 0 || res.CloseFirst != order {
			t.Errorf("%s closes first: %+v, want 101 connections without error", order, res)
		}
		if res.NetnsInode != ns.Inode || res.NetnsInode == self.Ino {
			t.Errorf("%s: churned in namespace %d, want the private %d (ours is %d)", order, res.NetnsInode, ns.Inode, self.Ino)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Config{Clients: 1, CloseFirst: "client", Family: 4, Payload: 1, Connections: 1}
	if err := good.Validate(); err != nil {
		t.Errorf("%+v: %v", good, err)
	}
	bad := good
	bad.Connections = 0
	if bad.Validate() == nil {
		t.Errorf("%+v: neither a duration nor a connection count, no error", bad)
	}
}
