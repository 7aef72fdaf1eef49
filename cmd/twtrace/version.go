package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Stamped by make with -ldflags -X (git rev-parse HEAD; "true" when tracked files differ from it), as is
// main.version (git describe). The go command's own VCS stamp is the fallback: it is absent in a git
// worktree, where .git is a file, and in go install …@vX builds.
var (
	commit   string
	modified string
)

// build says what this binary is: the version make stamped, else the module version the go command
// recorded (a tag for go install …@vX, a pseudo-version for a build in a checkout); the commit and
// whether the tree was modified.
type build struct {
	version   string
	commit    string // "" when not recorded (go install of a tagged module version records none)
	modified  bool
	goVersion string
	platform  string
}

func currentBuild() build {
	info, _ := debug.ReadBuildInfo()
	return buildFrom(build{version: version, commit: commit, modified: modified == "true"}, info)
}

func buildFrom(stamped build, info *debug.BuildInfo) build {
	b := stamped
	b.goVersion, b.platform = runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH
	if info == nil {
		return b
	}
	if b.version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		b.version = info.Main.Version
	}
	if b.commit != "" {
		return b
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.commit = s.Value
		case "vcs.modified":
			b.modified = s.Value == "true"
		}
	}
	return b
}

func (b build) write(w io.Writer) {
	commit := b.commit
	switch {
	case commit == "":
		commit = "unknown (not recorded in this build)"
	case b.modified:
		commit += " (with uncommitted changes)"
	}
	fmt.Fprintf(w, "twtrace %s\ncommit  %s\ngo      %s %s\n", b.version, commit, b.goVersion, b.platform)
}

func versionCommand(args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("version", "Usage: twtrace version\n\nPrint twtrace's version, the commit it was built from and the Go toolchain that built it.", stdout)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	currentBuild().write(stdout)
	return nil
}
