# twtrace's front door: make, make generate, make test, make vmtest, make run.
GO       ?= go
CLANG    ?= clang-19
BIN      := bin/twtrace
export CGO_ENABLED := 0

.PHONY: all build generate test test-unit vmtest bench soak run clean tools-clang tools-promtool tools-bench tools-load

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/twtrace

# Regenerates the committed eBPF objects and their Go bindings from bpf/.
generate: tools-clang
	cd tracer && $(GO) generate ./...

tools-clang:
	@command -v $(CLANG) >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CLANG) llvm-19; }

# Everything that proves twtrace works. Integration tests need root (they skip without it);
# promtool checks the alert rules and fires each from synthetic series here, and lints the
# exported metrics in the serve test; a real Prometheus server scrapes serve in another;
# nginx and ab (apache2-utils) are the load test's servers and client.
test: build tools-promtool tools-load
	$(GO) vet ./...
	promtool check rules deploy/prometheus/alerts.yaml
	promtool test rules deploy/prometheus/alerts_test.yaml
	TWTRACE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 15m ./...

# Debian's prometheus package holds both the server and promtool.
tools-promtool:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus; }

tools-load:
	@{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null && command -v ab >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx apache2-utils; }

# Unit tests only: no privileges needed.
test-unit:
	TWTRACE_UNIT_ONLY=1 $(GO) test -count=1 ./...

# The integration suite on Linux 5.10, 6.1 and 6.12 under QEMU, once per backend.
vmtest:
	bash .ci/vmtest/run.sh

# Overhead under connection churn next to libbpf-tools tcpstates, kernel cost per program,
# memory, the userspace hot path: about 7 minutes, as root. Writes BENCHMARKS.md.
bench: build tools-bench
	$(GO) build -o bin/churn ./cmd/churn
	$(GO) build -o bin/twbench ./cmd/twbench
	bin/twbench overhead

# The node agent under full churn for 10 minutes: RSS, map entries, lost events. Writes BENCHMARKS.md.
soak: build
	$(GO) build -o bin/churn ./cmd/churn
	$(GO) build -o bin/twbench ./cmd/twbench
	bin/twbench soak

tools-bench:
	@command -v tcpstates >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libbpf-tools; }

run: build
	@if [ "$$(id -u)" = 0 ]; then $(BIN) watch; else sudo $(BIN) watch; fi

clean:
	rm -rf bin .ci/vmtest/out
