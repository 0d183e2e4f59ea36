# edgerelay build, test and install. go-nvml needs cgo; the flag silences a
# deprecation warning from its bundled header.
export CGO_ENABLED := 1
export CGO_CFLAGS := -O2 -g -Wno-deprecated-declarations

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The commit, for builds where Go does not stamp it (-buildvcs=false).
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
PREFIX  ?= /usr/local
DESTDIR ?=
BIN     := bin/edgerelay
DOCDIR  ?= $(PREFIX)/share/doc/edgerelay
# The group that may read /etc/edgerelay: the service (a dynamic user) gets
# it as a supplementary group, so that SIGHUP can re-read the files there.
CONFIG_GROUP ?= edgerelay-config
SYSUSERSDIR  ?= /etc/sysusers.d

GO_SOURCES := $(shell find . -name '*.go' -not -path './.git/*') go.mod go.sum

.PHONY: build test demo install clean

build: $(BIN)

# A file target: `sudo make install` after `make build` needs no Go toolchain.
$(BIN): $(GO_SOURCES)
	$(GO) build -ldflags "-X main.version=$(VERSION) -X main.revision=$(REVISION)" -o $(BIN) ./cmd/edgerelay

# The README's test command: every package with the race detector, then vet.
test:
	$(GO) test -race -count=1 ./...
	$(GO) vet ./...

demo: $(BIN)
	$(BIN) run --demo

# Installs the binary, the unit (its paths follow PREFIX), the group that may
# read the configuration, the configuration (0640, never overwritten), the
# container entrypoint, and the documentation the unit points at.
install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/edgerelay
	install -d -m 0755 $(DESTDIR)/etc/systemd/system $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)/etc/edgerelay
	sed -e 's#file:///usr/local/share/doc/edgerelay/#file://$(DOCDIR)/#' -e 's#/usr/local/#$(PREFIX)/#g' \
		-e 's#edgerelay-config#$(CONFIG_GROUP)#g' systemd/edgerelay.service > $(DESTDIR)/etc/systemd/system/edgerelay.service
	chmod 0644 $(DESTDIR)/etc/systemd/system/edgerelay.service
	sed -e 's#edgerelay-config#$(CONFIG_GROUP)#g' systemd/edgerelay.sysusers > $(DESTDIR)$(SYSUSERSDIR)/edgerelay.conf
	chmod 0644 $(DESTDIR)$(SYSUSERSDIR)/edgerelay.conf
	install -D -m 0755 configs/runner-entrypoint.sh $(DESTDIR)$(PREFIX)/lib/edgerelay/runner-entrypoint.sh
	install -m 0644 README.md docs/OPERATIONS.md docs/BENCHMARKS.md configs/edgerelay.env $(DESTDIR)$(DOCDIR)/
	@if [ -z "$(DESTDIR)" ] && ! getent group $(CONFIG_GROUP) >/dev/null; then \
		echo "creating the group $(CONFIG_GROUP)"; \
		systemd-sysusers $(SYSUSERSDIR)/edgerelay.conf || groupadd --system $(CONFIG_GROUP); \
	fi
	@if [ -e $(DESTDIR)/etc/edgerelay/edgerelay.env ]; then \
		echo "kept $(DESTDIR)/etc/edgerelay/edgerelay.env (every setting with its default: $(DOCDIR)/edgerelay.env)"; \
	else \
		install -m 0640 configs/edgerelay.env $(DESTDIR)/etc/edgerelay/edgerelay.env; \
	fi
	chmod 0640 $(DESTDIR)/etc/edgerelay/edgerelay.env
	@if getent group $(CONFIG_GROUP) >/dev/null; then \
		chgrp $(CONFIG_GROUP) $(DESTDIR)/etc/edgerelay/edgerelay.env; \
	else \
		echo "note: no group $(CONFIG_GROUP) here; where this is installed, run systemd-sysusers and chgrp $(CONFIG_GROUP) /etc/edgerelay/edgerelay.env"; \
	fi

clean:
	rm -rf bin
