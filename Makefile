# ringedge — every target installs what it needs first, so a fresh clone works with
# `make run` and `make test` alone.
SHELL := /bin/bash
NODE  ?= node
TSX   := $(NODE) --import tsx
# tsx's synchronous transforms otherwise wait on an esbuild worker thread (Atomics.wait) that
# can hang a process for good on a loaded machine; "0" is esbuild's per-call synchronous path.
export ESBUILD_WORKER_THREADS := 0
# Debian packages the end-to-end tests drive as real peers.
# openssl: test device certificates; chromium: the status page's browser test (driven by
# playwright-core, which never downloads a browser); baresip: a real UA hearing music on hold.
SYSPKGS := sip-tester:sipp sipvicious:svwar socat:socat mosquitto:mosquitto iproute2:ip util-linux:unshare openssl:openssl chromium:chromium baresip:baresip
# Only the benchmarks need these (packet timestamps on loopback; Kamailio as the reference proxy
# of bench/vs-kamailio.bench.ts).
BENCHPKGS := tshark:tshark kamailio:kamailio

.PHONY: build run test unit e2e bench benchdeps demo deps sysdeps typecheck contract clean help

help:
	@echo "make run      build dist/ringedge.mjs and start the agent on embedded defaults (lowdb store under ./data, SIP UDP+TCP)"
	@echo "make test     install what is missing, typecheck, run every test (node:test)"
	@echo "make bench    run the benchmarks; figures go to bench/results/"
	@echo "make demo     simulated phones and calls to one group per strategy, as a timeline"

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: node_modules/.installed

# Installs each missing Debian package; `apt-get update` runs once, only if something is missing.
sysdeps:
	@missing=""; for p in $(SYSPKGS); do pkg=$${p%%:*}; bin=$${p##*:}; \
	  command -v $$bin >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

# The agent as shipped: one ESM bundle of agent/ (npm packages stay external), run by plain
# node. tsx's loader thread alone costs ~30 MB of RSS, which an appliance should not pay.
# The media worker thread (agent/media/worker.ts) is its own entry: dist/media-worker.mjs.
# How they are built (options, why minified) is bin/build.mjs.
SOURCES := $(shell find agent provisioning -name '*.ts' 2>/dev/null)
dist/ringedge.mjs: node_modules/.installed bin/build.mjs $(SOURCES)
	node bin/build.mjs

build: dist/ringedge.mjs

run: build
	bin/ringedge run

# The contract's validators are generated from its schema (a unit test fails when they are stale).
contract: deps
	$(TSX) contract/generate.ts

typecheck: deps
	npx tsc --noEmit -p .

# Tests run inside a private network namespace holding only loopback where the kernel
# allows it, so no test can ever reach a foreign host named inside a SIP message.
test: deps sysdeps typecheck
	bash test/run-tests.sh

unit: deps
	bash test/run-tests.sh test/unit

e2e: deps sysdeps
	bash test/run-tests.sh test/e2e

# tshark asks whether non-root users may capture; the preseed answers "no" (the bench runs as root).
benchdeps:
	@missing=""; for p in $(BENCHPKGS); do pkg=$${p%%:*}; bin=$${p##*:}; \
	  command -v $$bin >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | $$SUDO debconf-set-selections; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

bench: deps sysdeps benchdeps build
	bash bench/run.sh

demo: deps sysdeps
	$(TSX) demo/run.ts

clean:
	rm -rf node_modules .tmp
