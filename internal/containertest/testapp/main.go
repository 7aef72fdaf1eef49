// Command testapp is the one binary of the images the container runtime tests build: `testapp pause`
// is a pod's sandbox (it waits for a signal), `testapp churn N` opens and closes N TCP connections on
// the container's loopback, the client closing first (so each leaves a TIME_WAIT socket), then waits
// with its listener still open, churning N more at each SIGUSR1 (a test that starts once the
// container exists, knowing its id).
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: testapp pause | testapp churn N"))
	}
	switch os.Args[1] {
	case "pause":
	case "churn":
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fail(err)
		}
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			fail(err)
		}
		defer ln.Close()
		go serve(ln)
		again := make(chan os.Signal, 1)
		signal.Notify(again, syscall.SIGUSR1)
		if err := churn(ln.Addr().String(), n); err != nil {
			fail(err)
		}
		fmt.Println("churned", n)
		go func() {
			for range again {
				if err := churn(ln.Addr().String(), n); err != nil {
					fail(err)
				}
				fmt.Println("churned", n)
			}
		}()
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			io.Copy(io.Discard, c)
			c.Close()
		}()
	}
}

func churn(addr string, n int) error {
	for range n {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			return err
		}
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		if err := c.Close(); err != nil {
			return err
		}
	}
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "testapp:", err)
	os.Exit(1)
}
