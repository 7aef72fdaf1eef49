package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/internal/churn"
)

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-clients", "0"}, {"-duration", "-1s"}, {"-close", "both"}, {"-family", "5"}, {"-payload", "0"},
	} {
		if err := run(args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: error %v, want one naming %s", args, err, args[0])
		}
	}
}

// Both close orders complete real connections without error. In the current namespace: a
// private one needs re-executing the binary, which here is the test.
func TestChurnInCurrentNamespace(t *testing.T) {
	if os.Getenv("TWTRACE_UNIT_ONLY") != "" {
		t.Skip("TWTRACE_UNIT_ONLY: opens loopback connections")
	}
	for _, order := range []string{"client", "server"} {
		var out bytes.Buffer
		if err := run([]string{"-host-netns", "-json", "-close", order, "-clients", "1", "-duration", "50ms"}, &out); err != nil {
			t.Fatalf("%s: %v", order, err)
		}
		var r churn.Result
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.Connections == 0 || len(r.Errors) != 0 || r.CloseFirst != order {
			t.Errorf("%s closes first: %+v", order, r)
		}
	}
}
