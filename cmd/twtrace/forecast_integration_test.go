package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The forecast against connect() itself: a client that closes first connects from a
// 10-port range to one server until connect() fails (EADDRNOTAVAIL) or it has made its
// connections; the test counts the failures, twtrace timewait forecasts from outside the
// client. Without tcp_tw_reuse the timewait sockets hold all 10 ports: connect() fails,
// and the forecast must say so. With tcp_tw_reuse=1 and timestamps, connect() takes a
// port over a second after its timewait socket's last segment: at 4 connections a second
// it never fails, and the forecast must not say it will.
func TestForecastAgainstConnectFailures(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates network namespaces")
	}
	for _, c := range []struct {
		name     string
		reuse    string
		connects int
		pace     time.Duration
		fails    bool
	}{
		{"exhaustion", "0", 14, 50 * time.Millisecond, true},
		{"reuse", "1", 20, 250 * time.Millisecond, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var failures, made int
			var views []loadView
			inNetns(t, func(inode uint64) {
				for name, v := range map[string]string{"ip_local_port_range": "50000 50009", "tcp_tw_reuse": c.reuse, "tcp_timestamps": "1"} {
					if err := os.WriteFile(filepath.Join("/proc/sys/net/ipv4", name), []byte(v), 0o644); err != nil {
						t.Errorf("sysctl %s: %v", name, err)
						return
					}
				}
				cmd, stdout, stderr := startTwtrace(t, "timewait", "-o", "json", "--interval", "500ms", "--backend", *testBackend, "--netns", fmt.Sprint(inode))
				failures, made = clientClosesUntilRefused(t, c.connects, c.pace)
				time.Sleep(1200 * time.Millisecond) // a view printed after the last connection
				stopTwtrace(t, cmd, stderr)
				var err error
				if views, err = readViews(bytes.NewReader(stdout.Bytes())); err != nil {
					t.Error(err)
				}
			})
			if len(views) == 0 {
				t.Fatal("no view printed")
			}
			if (failures > 0) != c.fails {
				t.Fatalf("%d of %d connect() calls failed with EADDRNOTAVAIL, want failures %v", failures, made+failures, c.fails)
			}
			v := views[len(views)-1]
			if len(v.Dests) == 0 || v.Dests[0].AtRisk == nil || v.Dests[0].Steady == nil || v.Dests[0].Reuse == nil {
				t.Fatalf("no forecast for the server: %+v", v.Dests)
			}
			d := v.Dests[0]
			if *d.AtRisk != c.fails || *d.Reuse != (c.reuse == "1") || *d.Steady > 10 {
				t.Errorf("forecast: at risk %v, reuse %v, steady state %.1f of 10 ports; connect() failed %d times",
					*d.AtRisk, *d.Reuse, *d.Steady, failures)
			}
			// no earlier view may have foretold a failure that did not happen
			for i, v := range views {
				for _, d := range v.Dests {
					if !c.fails && d.AtRisk != nil && *d.AtRisk {
						t.Errorf("view %d forecast exhaustion; connect() never failed", i)
					}
				}
			}
		})
	}
}

// clientClosesUntilRefused makes up to n loopback connections to a server on port 9000, one
// every pace, each closed by the client first; it stops after the first EADDRNOTAVAIL.
func clientClosesUntilRefused(t *testing.T, n int, pace time.Duration) (failures, made int) {
	t.Helper()
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	must(t, err)
	defer unix.Close(ln)
	must(t, unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
	server := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 9000}
	must(t, unix.Bind(ln, server))
	must(t, unix.Listen(ln, 64))
	for i := 0; i < n; i++ {
		time.Sleep(pace)
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		must(t, err)
		err = unix.Connect(c, server)
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			unix.Close(c)
			return failures + 1, made
		}
		must(t, err)
		a, _, err := unix.Accept(ln)
		must(t, err)
		unix.Close(c) // the client closes first: its side waits in TIME_WAIT on its port
		buf := make([]byte, 1)
		for {
			k, err := unix.Read(a, buf)
			must(t, err)
			if k == 0 {
				break
			}
		}
		unix.Close(a)
		made++
	}
	return failures, made
}
