#!/usr/bin/env bash
# Project tasks; needs only python3 (3.11) and pip.
#   ./dev.sh run [mlflow run options]   set up, then `mlflow run .` (the default experiment)
#   ./dev.sh test [pytest options]      set up, then the test suite
#   ./dev.sh bench                      set up, then the benchmarks (docs/benchmarks.md)
#   ./dev.sh ui                         MLflow UI on http://127.0.0.1:5000
#   ./dev.sh server [stop|status|migrate mlflow.db]   team tracking server (PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=$ROOT/.venv
export PATH="$VENV/bin:$PATH"  # `mlflow run --env-manager local` calls `python` from PATH
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$ROOT/mlflow.db}"
# `mlflow run` creates the project's run before our code starts: name its experiment here.
export MLFLOW_EXPERIMENT_NAME="${MLFLOW_EXPERIMENT_NAME:-mammo-microcal}"

setup() {
  # Reinstall only when pyproject.toml changed since the last install.
  if [[ ! -f $VENV/.installed || pyproject.toml -nt $VENV/.installed ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
    touch "$VENV/.installed"
  fi
}

task=${1:-help}; shift || true
case $task in
  setup) setup ;;
  run)   setup; mlflow run . --env-manager local "$@" ;;
  # one worker per core plus one (at most 4), a test file (or class) whole on one: tests/conftest.py
  test)  setup; python -m pytest -n auto --dist loadscope --no-loadscope-reorder "$@" ;;
  bench) setup; for b in benchmarks/*_bench.py; do python "$b" "$@"; done ;;
  # one person's UI: one server process, not MLflow's 4; its job runner (GenAI jobs, which
  # nothing here submits) is eight more processes: off unless set (tune/tracking_server.py)
  ui)    setup; MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
           mlflow ui --backend-store-uri "$MLFLOW_TRACKING_URI" --host 127.0.0.1 --port 5000 --workers 1 ;;
  server) setup; python -m tune.tracking_server "$@" ;;
  *)     sed -n '2,8p' "$0"; exit 2 ;;
esac
