# Convenience targets; the scripts in deploy/ are the real interface.
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)

.PHONY: build test vet fmt allinone allinone-stop allinone-status test-env

build:
	$(GO) build -o bin/capsuled ./cmd/capsuled
	$(GO) build -o bin/capsule ./cmd/capsule

vet:
	$(GO) vet ./...

fmt:
	gofmt -w .

# The full test suite against real components (root; starts them).
test:
	deploy/test.sh

test-env:
	deploy/test-env.sh

allinone:
	deploy/allinone.sh start

allinone-stop:
	deploy/allinone.sh stop

allinone-status:
	deploy/allinone.sh status
