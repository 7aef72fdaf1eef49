package cri

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

func TestDetect(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "crio.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	saved := Sockets
	defer func() { Sockets = saved }()

	Sockets = []string{filepath.Join(dir, "containerd.sock"), dir, sock}
	if got, err := Detect(); err != nil || got != sock {
		t.Fatalf("Detect = %q, %v; want %q", got, err, sock)
	}
	Sockets = []string{filepath.Join(dir, "containerd.sock")}
	if _, err := Detect(); !errors.Is(err, ErrNoSocket) || !strings.Contains(err.Error(), "--cri-socket") {
		t.Fatalf("Detect with no runtime: %v", err)
	}
}

// A socket that is not a CRI runtime is refused at Dial, saying which socket and why.
func TestDialNotCRI(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "not-cri.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	_, err = Dial(context.Background(), sock)
	if err == nil || !strings.Contains(err.Error(), "does not answer the CRI API v1") || !strings.Contains(err.Error(), sock) {
		t.Fatalf("Dial: %v", err)
	}
}
