package main

import (
	"io"

	"github.com/rs/zerolog"
)

// newLogger writes diagnostics, never events, to stderr.
func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), usagef("--log-level %q: want debug, info, warn or error", level)
	}
	switch format {
	case "console":
		w = zerolog.ConsoleWriter{Out: w, NoColor: true}
	case "json":
	default:
		return zerolog.Nop(), usagef("--log-format %q: want console or json", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}
