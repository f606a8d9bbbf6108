#!/usr/bin/env bash
# Bootstrap, then lint, type-check and test PDSNO. Extra arguments go to pytest:
#   scripts/test.sh -k sqlite
# Every stage runs even if an earlier one failed; the exit status is non-zero if any failed.
# pytest exit code 5 (no tests collected) counts as a failure.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/bootstrap.sh"

export PATH="$ROOT/.venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1

failed=()
stage() {
    local name="$1"
    shift
    printf '\n==> %s: %s\n' "$name" "$*"
    local rc=0
    "$@" || rc=$?
    if ((rc != 0)); then
        printf '==> %s FAILED (exit %d)\n' "$name" "$rc"
        failed+=("$name")
    fi
}

stage "ruff check" ruff check .
stage "ruff format" ruff format --check .
stage "mypy" mypy
stage "pytest" python -m pytest "$@"
# The collection's quality gates (docs/collection.md): ansible-test runs in a staged, installed copy.
stage "ansible-lint" ansible-lint --nocolor
stage "ansible-test sanity" tests/collection/ansible_test.sh sanity
stage "ansible-test units" tests/collection/ansible_test.sh units

if ((${#failed[@]})); then
    summary="$(printf '%s, ' "${failed[@]}")"
    printf '\n==> FAILED: %s\n' "${summary%, }"
    exit 1
fi
printf '\n==> all stages passed\n'
