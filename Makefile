# The front door's commands. `make help` lists them.
CARGO ?= cargo
PM_TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/postgres
export PM_TEST_POSTGRES_URL
# pyx12's validator: the Billing tests check every 837P file they write with it (installed with
# tests/python/requirements.txt; the tests say so and skip that check when it is missing).
PM_X12VALID ?= $(shell command -v x12valid 2>/dev/null)
export PM_X12VALID

.PHONY: help run seed web test test-rust test-python lint bench clean-data

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: ## Run the whole mesh on SQLite (under .pm-data) with dev mTLS certificates
	$(CARGO) run -q -p pm --bin pm -- run

seed: ## Load the demo operating model into a running mesh (`make run` in another terminal)
	$(CARGO) run -q -p pm --bin pm -- demo seed

web: ## Rebuild the calendar page (web/, TypeScript): npm ci, code from proto/ (buf generate, local plugin), type check, esbuild into the committed crates/pm/web-dist/
	cd web && npm ci --no-fund --no-audit && npm run generate && npm run check && npm run build

test: test-rust test-python ## Every test: unit, store suite on SQLite and PostgreSQL, end-to-end, Python polyglot

test-rust: ## Rust unit, store (both backends) and end-to-end tests (needs PostgreSQL at PM_TEST_POSTGRES_URL)
	$(CARGO) test --locked --workspace --all-targets

test-python: ## The Python grpcio client against `pm run` over mTLS
	$(CARGO) build -q --locked -p pm --bin pm
	PM_BIN=$(CURDIR)/target/debug/pm tests/python/run.sh

lint: ## clippy -D warnings, rustfmt check, cargo deny (licences, bans, sources), buf lint, buf breaking against the previous commit
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) fmt --all -- --check
	# deny.toml: the licence allow-list, one crypto provider (ring) and TLS stack, crates.io only.
	# Advisories are not checked here: their database is a git clone from GitHub, and CI reaches
	# only package registries. Run `cargo deny check advisories` where GitHub is reachable.
	$(CARGO) deny --locked check --hide-inclusion-graph licenses bans sources
	cd proto && buf lint
	# Contracts evolve compatibly: no change may break a client of the previous commit's proto/.
	if git rev-parse -q --verify HEAD~1 >/dev/null; then \
	  buf breaking proto --against '.git#ref=HEAD~1,subdir=proto'; \
	else echo "buf breaking: no previous commit to compare with"; fi

bench: ## Throughput and latency: the ceiling, Org reads and writes, audited PHI reads, Scheduling bookings and slot search, on SQLite and PostgreSQL
	$(CARGO) run -q --release -p pm --bin pm-bench

clean-data: ## Remove the local mesh's data (SQLite files and dev certificates)
	rm -rf .pm-data
