# edgerelay build, test and install. go-nvml needs cgo; the flag silences a
# deprecation warning from its bundled header.
export CGO_ENABLED := 1
export CGO_CFLAGS := -O2 -g -Wno-deprecated-declarations

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
PREFIX  ?= /usr/local
DESTDIR ?=
BIN     := bin/edgerelay

.PHONY: build test demo install clean

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/edgerelay

# The README's test command: every package with the race detector, then vet.
test:
	$(GO) test -race -count=1 ./...
	$(GO) vet ./...

demo:
	$(GO) run ./cmd/edgerelay run --demo

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/edgerelay
	install -D -m 0644 systemd/edgerelay.service $(DESTDIR)/etc/systemd/system/edgerelay.service
	install -D -m 0640 configs/edgerelay.env $(DESTDIR)/etc/edgerelay/edgerelay.env
	install -D -m 0755 configs/runner-entrypoint.sh $(DESTDIR)$(PREFIX)/lib/edgerelay/runner-entrypoint.sh

clean:
	rm -rf bin
