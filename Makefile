# twtrace's front door: make, make generate, make test, make vmtest, make run, make release, make image.
GO       ?= go
CLANG    ?= clang-19
BIN      := bin/twtrace
# What `twtrace version` prints: git describe, the commit, whether tracked files differ from it.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
MODIFIED := $(if $(COMMIT),$(shell git diff --quiet HEAD -- 2>/dev/null || echo true))
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.modified=$(MODIFIED)
ARCHES   := amd64 arm64
DIST     := dist
# The image's name without a tag; set it to your registry's: make image IMAGE=registry.example/twtrace
IMAGE    ?= localhost/twtrace
export CGO_ENABLED := 0

.PHONY: all build generate test test-unit test-arm64 vmtest bench soak run clean release image image-push image-test \
	tools-clang tools-promtool tools-bench tools-podman tools-qemu-user tools-containerd

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/twtrace

# Static binaries for every architecture, stripped, with their SHA-256 sums: $(DIST)/twtrace-linux-<arch>, $(DIST)/SHA256SUMS.
release:
	rm -rf $(DIST) && mkdir -p $(DIST)
	for arch in $(ARCHES); do \
		GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(DIST)/twtrace-linux-$$arch ./cmd/twtrace || exit 1; \
	done
	cd $(DIST) && sha256sum twtrace-linux-* >SHA256SUMS && cat SHA256SUMS

# The container image for linux/amd64 and linux/arm64 (one manifest list, $(IMAGE):$(VERSION)), from the
# release binaries; bin/image/twtrace-$(VERSION).oci.tar is the same as an OCI archive.
image: release tools-podman
	bash .ci/image/build.sh $(IMAGE) $(VERSION) $(DIST) bin/image

# Pushes the image (both platforms) to the registry IMAGE names; log in first with podman login.
image-push: tools-podman
	podman manifest push --all $(IMAGE):$(VERSION) docker://$(IMAGE):$(VERSION)

# The image run by containerd (ctr) on this machine: `version` and `probe` as its non-root user. Needs root.
image-test: image
	bash .ci/image/test.sh $(IMAGE) $(VERSION) bin/image/twtrace-$(VERSION).oci.tar

tools-podman:
	@command -v podman >/dev/null && command -v setcap >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman libcap2-bin; }

# Regenerates the committed eBPF objects and their Go bindings from bpf/.
generate: tools-clang
	cd tracer && $(GO) generate ./...

tools-clang:
	@command -v $(CLANG) >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CLANG) llvm-19; }

# Everything that proves twtrace works. Integration tests need root (they skip without it);
# promtool checks the alert rules and fires each from synthetic series here, and lints the
# exported metrics in the serve test; a real Prometheus server scrapes serve in another; the
# workload tests run real pods on a private containerd (.ci/containerd/containerd.sh). Then the arm64 build.
test: build tools-promtool tools-containerd
	$(GO) vet ./...
	promtool check rules deploy/prometheus/alerts.yaml
	promtool test rules deploy/prometheus/alerts_test.yaml
	TWTRACE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 15m ./...
	$(MAKE) test-arm64

# The arm64 build: vet, and the unit tests run under qemu-user emulation (the kernel tests run in make vmtest).
test-arm64: tools-qemu-user
	GOARCH=arm64 $(GO) vet ./...
	TWTRACE_UNIT_ONLY=1 GOARCH=arm64 $(GO) test -count=1 -exec qemu-aarch64-static ./...

tools-qemu-user:
	@command -v qemu-aarch64-static >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static; }

# Debian's prometheus package holds both the server and promtool.
tools-promtool:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus; }

tools-containerd:
	@if [ "$$(id -u)" = 0 ] && ! { command -v containerd && command -v runc && test -x /usr/lib/cni/bridge; } >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd runc containernetworking-plugins; fi

# Unit tests only: no privileges needed.
test-unit:
	TWTRACE_UNIT_ONLY=1 $(GO) test -count=1 ./...

# The integration suite under QEMU, once per backend: amd64 on Linux 5.10, 6.1 and 6.12, arm64 on 6.1 and 6.12.
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
	rm -rf bin $(DIST) .ci/vmtest/out
