package main

import (
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildFrom(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}, {Key: "vcs.modified", Value: "true"}}
	dev := build{version: "dev"}
	tests := []struct {
		name    string
		stamped build
		info    *debug.BuildInfo
		want    string
	}{
		{"make stamps version and commit", build{version: "v0.2.0-3-gfedcba9", commit: "fedcba9876543210fedcba9876543210fedcba98"},
			&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261201000000-0123456789ab+dirty"}, Settings: vcs},
			"twtrace v0.2.0-3-gfedcba9\ncommit  fedcba9876543210fedcba9876543210fedcba98\n"},
		{"make in a modified tree", build{version: "v0.2.0-dirty", commit: "fedcba9876543210fedcba9876543210fedcba98", modified: true}, nil,
			"twtrace v0.2.0-dirty\ncommit  fedcba9876543210fedcba9876543210fedcba98 (with uncommitted changes)\n"},
		{"go install of a tag records no commit", dev, &debug.BuildInfo{Main: debug.Module{Version: "v0.2.0"}},
			"twtrace v0.2.0\ncommit  unknown (not recorded in this build)\n"},
		{"go build in a clone", dev, &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261201000000-0123456789ab+dirty"}, Settings: vcs},
			"twtrace v0.0.0-20261201000000-0123456789ab+dirty\ncommit  0123456789abcdef0123456789abcdef01234567 (with uncommitted changes)\n"},
		{"go build without VCS information", dev, &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			"twtrace dev\ncommit  unknown (not recorded in this build)\n"},
		{"no build information", dev, nil, "twtrace dev\ncommit  unknown (not recorded in this build)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			buildFrom(tt.stamped, tt.info).write(&out)
			want := tt.want + "go      " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
			if out.String() != want {
				t.Errorf("got\n%s\nwant\n%s", out.String(), want)
			}
		})
	}
}

func TestVersionRejectsArguments(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run([]string{"version", "extra"}, &stdout, &stderr)
	if _, ok := err.(usageError); !ok || exitCode(err, &stderr) != 2 {
		t.Fatalf("twtrace version extra: %v, want a usage error (exit 2)", err)
	}
}

// The binary make builds says which commit it is: the version from git describe (via -ldflags),
// the commit and the tree's state from the go command's VCS stamp.
func TestVersionStampedByMake(t *testing.T) {
	bin := os.Getenv("TWTRACE_BIN")
	if bin == "" {
		t.Skip("TWTRACE_BIN not set: only the binary make builds is stamped (make test sets it)")
	}
	if _, err := os.Stat("../../.git"); err != nil {
		t.Skip("run outside the source tree (the kernel matrix's VM): no git history to compare with")
	}
	git := func(args ...string) string {
		out, err := exec.Command("git", args...).Output()
		if err != nil {
			t.Skipf("git %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	describe, head := git("describe", "--tags", "--always", "--dirty"), git("rev-parse", "HEAD")
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 {
		t.Fatalf("%s version printed %q, want three lines", bin, out)
	}
	// The tree may have been edited since the build: compare the commit, and the binary with itself on its state.
	version, dirty := strings.CutSuffix(strings.TrimPrefix(lines[0], "twtrace "), "-dirty")
	if want := strings.TrimSuffix(describe, "-dirty"); version != want {
		t.Errorf("version line %q, want %q (git describe)", lines[0], "twtrace "+describe)
	}
	wantCommit := "commit  " + head
	if dirty {
		wantCommit += " (with uncommitted changes)"
	}
	if lines[1] != wantCommit {
		t.Errorf("commit line %q, want %q", lines[1], wantCommit)
	}
	if want := "go      " + runtime.Version(); !strings.HasPrefix(lines[2], want) {
		t.Errorf("go line %q, want it to start with %q", lines[2], want)
	}
}
