#!/usr/bin/env bash
# One command per task; the first use creates .venv and installs the project into it.
#
#   ./run.sh train [overrides]     python src/train.py [overrides]   (the built-in demo by default)
#   ./run.sh eval ckpt_path=PATH   python src/eval.py ckpt_path=PATH
#   ./run.sh test [pytest args]    the test suite
#   ./run.sh lint                  ruff
#   ./run.sh python ...            the environment's python
#
# ALEXNET_VENV chooses another environment directory, PYTHON another interpreter (3.10+).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

venv=${ALEXNET_VENV:-.venv}
python=${PYTHON:-python3}

setup() {
    local stamp="$venv/.installed-$(cksum pyproject.toml | cut -d' ' -f1)"
    [ -f "$stamp" ] && return 0
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "error: $python is not Python 3.10 or newer; set PYTHON=/path/to/python3.X" >&2
        exit 1
    fi
    echo "setting up $venv (first run only) ..." >&2
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e '.[dev]'
    rm -f "$venv"/.installed-*
    touch "$stamp"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    train) setup; exec "$venv/bin/python" src/train.py "$@" ;;
    eval) setup; exec "$venv/bin/python" src/eval.py "$@" ;;
    test) setup; exec "$venv/bin/python" -m pytest "$@" ;;
    lint) setup; exec "$venv/bin/ruff" check src tests ;;
    python) setup; exec "$venv/bin/python" "$@" ;;
    setup) setup ;;
    *)
        sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
