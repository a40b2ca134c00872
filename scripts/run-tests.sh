#!/usr/bin/env bash
# Runs the test suites of `make test`: unit, then integration against a Kafka
# broker. Uses the broker that answers at KAFKA_BOOTSTRAP (or 127.0.0.1 on
# CONVMESH_BROKER_PORT, default 9092); when none answers it starts a local one
# in var/test-broker and stops (and deletes) it on exit, whatever the outcome.
#
#   scripts/run-tests.sh [unit|integration|all|chaos]     (default: all)
#
# chaos (not part of all) runs tests/chaos, which starts a broker of its own on
# free ports: it needs neither KAFKA_BOOTSTRAP nor a running broker.
set -euo pipefail
cd "$(dirname "$0")/.."

suites="${1:-all}"
CONVMESH=.venv/bin/convmesh
PYTEST=.venv/bin/pytest
BROKER_DIR="$PWD/var/test-broker"
started_broker=""

stop_broker() {
  if [[ -n "$started_broker" ]]; then
    echo "run-tests: stopping the broker this run started"
    "$CONVMESH" broker stop --data-dir "$BROKER_DIR" || true
    # Its topics were all namespaced test topics: start fresh next time.
    rm -rf "$BROKER_DIR"
    started_broker=""
  fi
}
trap stop_broker EXIT
trap 'exit 130' INT TERM

# pytest exits 5 when it collected no tests: for us that is a failure too, and
# so is every other non-zero code.
run_pytest() {
  local rc=0
  "$PYTEST" "$@" || rc=$?
  if [[ $rc -eq 5 ]]; then
    echo "run-tests: no tests collected in $* (pytest exit 5): failing" >&2
  fi
  return $rc
}

need_broker() {
  if [[ -n "${KAFKA_BOOTSTRAP:-}" ]]; then
    # An address the caller chose: use it or fail, never start a broker in its place.
    if ! "$CONVMESH" broker status; then
      echo "run-tests: KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP does not answer" >&2
      exit 1
    fi
    return
  fi
  local port="${CONVMESH_BROKER_PORT:-9092}"
  export KAFKA_BOOTSTRAP="127.0.0.1:$port"
  if "$CONVMESH" broker status >/dev/null 2>&1; then
    echo "run-tests: using the broker that answers at $KAFKA_BOOTSTRAP"
    return
  fi
  echo "run-tests: no broker at $KAFKA_BOOTSTRAP; starting one in $BROKER_DIR"
  started_broker=1
  # Where the tests find its log when they explain a failure.
  export CONVMESH_TEST_BROKER_LOG="$BROKER_DIR/broker/logs/server.log"
  # Started as a local broker: KAFKA_BOOTSTRAP would mark it as external.
  env -u KAFKA_BOOTSTRAP "$CONVMESH" broker start --data-dir "$BROKER_DIR"
}

failed=0
if [[ "$suites" == all || "$suites" == unit ]]; then
  run_pytest tests/unit || failed=1
fi
if [[ "$suites" == all || "$suites" == integration ]]; then
  need_broker
  run_pytest tests/integration || failed=1
fi
if [[ "$suites" == chaos ]]; then
  # Its own broker: an inherited KAFKA_BOOTSTRAP must not point it elsewhere.
  env -u KAFKA_BOOTSTRAP "$PYTEST" tests/chaos -s -p no:cacheprovider || failed=1
fi
exit $failed
