package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tool is one configuration measured against the baseline: a tracer run while churn runs.
type tool struct {
	name string
	argv []string // nil: the baseline, nothing attached
	env  []string
	// ready says, from its stderr and pid, that the tool is attached and tracing
	ready func(stderr string, pid int) bool
	// lost reads the events the tool says it lost from its stderr at exit
	lost func(stderr string) (uint64, bool)
}

func twtraceTool(name, bin string, args ...string) tool {
	return tool{
		name: name,
		argv: append([]string{bin}, append(args, "--log-format", "json")...),
		ready: func(stderr string, _ int) bool {
			return strings.Contains(stderr, `"message":"tracing"`)
		},
		lost: sumOf(regexp.MustCompile(`(\d+) lost \[`)),
	}
}

func tcpstatesTool(bin string) tool {
	return tool{
		name: "tcpstates",
		argv: []string{bin},
		ready: func(_ string, pid int) bool {
			o := objectsOf(pid)
			return len(o.Progs) > 0 && (len(o.Links) > 0 || o.PerfEvents > 0)
		},
		lost: sumOf(regexp.MustCompile(`lost (\d+) events on CPU`)),
	}
}

func sumOf(re *regexp.Regexp) func(string) (uint64, bool) {
	return func(s string) (uint64, bool) {
		var sum uint64
		found := false
		for _, m := range re.FindAllStringSubmatch(s, -1) {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			sum += n
			found = true
		}
		return sum, found
	}
}

// running is a started tool.
type running struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
}

func (t tool) start() (*running, error) {
	if t.argv == nil {
		return nil, nil
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	r := &running{cmd: exec.Command(t.argv[0], t.argv[1:]...), stderr: &syncBuffer{}}
	r.cmd.Stdout, r.cmd.Stderr = devnull, r.stderr
	r.cmd.Env = append(os.Environ(), t.env...)
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", t.name, err)
	}
	for deadline := time.Now().Add(30 * time.Second); !t.ready(r.stderr.String(), r.cmd.Process.Pid); time.Sleep(20 * time.Millisecond) {
		if zombie(r.cmd.Process.Pid) {
			r.cmd.Wait()
			return nil, fmt.Errorf("%s exited before tracing:\n%s", t.name, r.stderr.String())
		}
		if time.Now().After(deadline) {
			r.cmd.Process.Kill()
			r.cmd.Wait()
			return nil, fmt.Errorf("%s did not start tracing within 30 s:\n%s", t.name, r.stderr.String())
		}
	}
	return r, nil
}

// stop interrupts the tool and returns its stderr and peak RSS (KiB).
func (r *running) stop() (string, uint64, error) {
	r.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		r.cmd.Process.Kill()
		<-done
		err = fmt.Errorf("did not exit within 30 s of SIGINT")
	}
	var rss uint64
	if ru, ok := r.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = uint64(ru.Maxrss)
	}
	return r.stderr.String(), rss, err
}

// zombie says the child has exited (and nobody has reaped it yet).
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
