# convmesh — the two commands of the quick start are `make demo` and `make test`.
PYTHON   ?= python3.11
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
CONVMESH := $(VENV)/bin/convmesh

.PHONY: venv jars browser demo up down status logs test unit integration chaos-short chaos fuzz lint fmt check clean bench bench-state bench-stage bench-recovery

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# The Kafka broker jars, fetched once with Maven into ~/.cache/convmesh
# (CONVMESH_CACHE_DIR); `convmesh down --purge` keeps them.
jars: venv
	$(CONVMESH) broker fetch

# Debian's chromium and its driver, for the console test
# (tests/integration/test_console.py); installed only when missing (needs root).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "chromium and chromedriver are installed"; \
	else \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
	    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }; \
	fi

# The local targets run in development mode (public development keys and
# tokens) unless the caller sets CONVMESH_DEV_MODE or real secrets themselves.
LOCAL := CONVMESH_DEV_MODE=$${CONVMESH_DEV_MODE:-true}

# A fresh mesh on this machine: broker, topics, the five services, their status.
# Its workload is small: the protected lane's k is 5 here (50 by default) so
# that some rows are large enough to be published.
demo: venv jars
	$(LOCAL) $(CONVMESH) down --purge
	$(LOCAL) CONVMESH_PRIVACY_K=$${CONVMESH_PRIVACY_K:-5} $(CONVMESH) demo

up: venv jars
	$(LOCAL) $(CONVMESH) up

down: venv
	$(CONVMESH) down

status: venv
	$(CONVMESH) status

# Unit then integration tests; starts a broker when none answers and stops it
# again afterwards, also on failure (see scripts/run-tests.sh).
test: venv jars
	scripts/run-tests.sh

unit: venv
	scripts/run-tests.sh unit

integration: venv jars
	scripts/run-tests.sh integration

# The chaos suite (tests/chaos, docs/reliability.md) on a broker of its own (own
# ports and data dir: the shared broker is never stopped). chaos-short is the CI
# size: kills, an all-workers kill, a broker restart, a scale-out and -in, a
# damaged store. chaos is the long run; override CONVMESH_CHAOS_* to change it.
chaos-short: venv jars
	scripts/run-tests.sh chaos

chaos: venv jars
	CONVMESH_CHAOS_CONVERSIONS=$${CONVMESH_CHAOS_CONVERSIONS:-50000} \
	CONVMESH_CHAOS_FAULTS=$${CONVMESH_CHAOS_FAULTS:-random:60} \
	CONVMESH_CHAOS_TIMEOUT_S=$${CONVMESH_CHAOS_TIMEOUT_S:-3600} \
	scripts/run-tests.sh chaos

# Hostile input against every decoder of a consumed topic (100,000 per topic).
fuzz: venv
	$(PY) -m tests.chaos.hostile --inputs $${FUZZ_INPUTS:-100000}

lint: venv
	$(VENV)/bin/ruff check .

# Rewrites the code into the house format (ruff format, import order).
fmt: venv
	$(VENV)/bin/ruff check --select I --fix .
	$(VENV)/bin/ruff format .

# What CI checks before the tests: lint, format, types (strict on shared/ and
# services/), and the import rules of docs/design.md ("map of the house").
check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The pipeline against a chain of plain Kafka relays (docs/benchmarks.md): needs the
# broker up (make up or convmesh broker start); takes several minutes; not run by CI.
# Extra options: make bench BENCH_ARGS="--workers-of attribute=2 --profile attribute".
bench: venv
	$(CONVMESH) bench $(BENCH_ARGS)

# RSS per service while identity links and engagements load, then conversions over
# that state (bench/state.py).
bench-state: venv
	$(PY) -m bench.state $(BENCH_STATE_ARGS)

# identity_match alone with 1, 2 and 4 workers, the other services stopped: how the
# busiest service scales when its workers have the cores (bench/stage.py).
bench-stage: venv
	$(PY) -m bench.stage $(BENCH_STAGE_ARGS)

# Recovery time of a moved partition with 0 and 1 standby replicas (bench/recovery.py).
bench-recovery: venv
	$(PY) -m bench.recovery $(BENCH_RECOVERY_ARGS)

# Stops the local mesh and deletes its data (var/mesh/); the venv and jar cache stay.
clean: venv
	$(CONVMESH) down --purge
