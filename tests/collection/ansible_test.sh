#!/usr/bin/env bash
# Run ansible-test on the collection as it ships: build the tarball, install it offline into a
# throwaway ansible_collections/pdsno/net tree (ansible-test wants that layout, a real path and no git
# checkout around it), and run `ansible-test "$@"` there with the venv's Python 3.11.
#
#   tests/collection/ansible_test.sh sanity --test validate-modules
#   tests/collection/ansible_test.sh units
#
# ansible-test makes one virtualenv per sanity test under ~/.ansible/test/venv and reuses it; pip
# inside them is bootstrapped from tests/collection/get_pip.py (see there), so only the first run
# needs the package index.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV_BIN="$ROOT/.venv/bin"
# The pip version ansible-test bootstraps (its cache file name carries it).
PIP_VERSION="$("$VENV_BIN/python" -c '
from types import SimpleNamespace
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(SimpleNamespace(version="3.11"))["pip"])')"
CACHE="$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py"

work="$(mktemp -d "${TMPDIR:-/tmp}/pdsno-ansible-test.XXXXXX")"
trap 'rm -rf -- "$work"' EXIT

mkdir -p "$(dirname -- "$CACHE")"
[[ -f "$CACHE" ]] || cp -- "$ROOT/tests/collection/get_pip.py" "$CACHE"

# Outside the repository, so its ansible.cfg (collections_path = .) does not make galaxy think the
# collection is installed already.
cd "$work"
"$VENV_BIN/ansible-galaxy" collection build --output-path "$work/dist" "$ROOT" >/dev/null
ANSIBLE_COLLECTIONS_PATH="$work/root" "$VENV_BIN/ansible-galaxy" collection install --offline --force -p "$work/root" "$work"/dist/pdsno-net-*.tar.gz >/dev/null
cd "$work/root/ansible_collections/pdsno/net"
extra=()
# ansible-test units wants pytest-xdist, pytest-mock and mock; without them in the venv it makes a
# throwaway virtualenv of its own for the run (slower: about 50 s of installing).
if [[ "${1:-}" == units ]] && ! "$VENV_BIN/python" -c 'import xdist, pytest_mock, mock' 2>/dev/null; then
    extra+=(--venv)
fi
"$VENV_BIN/ansible-test" "$@" --python 3.11 --color no "${extra[@]}"
