"""The Ansible collection builds cleanly, and the repository layout does not confuse pytest.

The repository root *is* the collection ``pdsno.net``; ``ansible_collections/pdsno/net`` is a
symlink back to the root (``../..``) so that Ansible can find the collection in place. These
tests make sure neither ``ansible-galaxy collection build`` nor pytest's collection trips over
that loop, and that the runtime/CI parts of the repository stay out of the collection tarball.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
THIS_FILE = Path(__file__).resolve().relative_to(REPO_ROOT).as_posix()

# Set in the environment of the nested pytest run below so this module can never recurse.
_NESTED_ENV = "PDSNO_NESTED_COLLECT_ONLY"

FORBIDDEN_PREFIXES = (
    "ansible_collections",
    "runtime/",
    "tests/runtime",
    "tests/collection",
    "tests/ui",
    ".venv",
    "bench/",
    "scripts/",
    "build/",
    ".ansible/",
    ".ansible-lint",
)

pytestmark = pytest.mark.skipif(
    os.environ.get(_NESTED_ENV) == "1", reason="inside the nested collect-only run"
)


def _venv_tool(name: str) -> Path:
    # Deliberately not resolved: sys.executable is .venv/bin/python (a symlink into the base
    # interpreter); the console scripts live next to the symlink.
    tool = Path(sys.executable).parent / name
    if not tool.exists():
        pytest.fail(f"{tool} not found; run scripts/bootstrap.sh", pytrace=False)
    return tool


@pytest.fixture(scope="module")
def collection_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("galaxy-build")
    env = dict(os.environ)
    env.setdefault("ANSIBLE_NOCOLOR", "1")
    proc = subprocess.run(
        [str(_venv_tool("ansible-galaxy")), "collection", "build", "--output-path", str(out)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (
        f"ansible-galaxy collection build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    tarballs = sorted(out.glob("pdsno-net-*.tar.gz"))
    assert len(tarballs) == 1, f"expected one pdsno-net-*.tar.gz in {out}, found {tarballs}\n{proc.stdout}"
    return tarballs[0]


@pytest.fixture(scope="module")
def members(collection_tarball: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(collection_tarball, "r:gz") as tar:
        return tar.getmembers()


def _name(member: tarfile.TarInfo) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return name


def test_tarball_exists(collection_tarball: Path) -> None:
    assert collection_tarball.is_file()
    assert collection_tarball.stat().st_size > 0


def test_no_forbidden_paths(members: list[tarfile.TarInfo]) -> None:
    bad = sorted(_name(m) for m in members if _name(m).startswith(FORBIDDEN_PREFIXES))
    assert bad == [], f"paths that must not ship in the collection: {bad}"


def test_no_symlinks(members: list[tarfile.TarInfo]) -> None:
    links = sorted(f"{_name(m)} -> {m.linkname}" for m in members if m.issym() or m.islnk())
    assert links == [], f"symlinks/hard links in the collection tarball: {links}"


@pytest.mark.parametrize("required", ["MANIFEST.json", "FILES.json", "meta/runtime.yml"])
def test_required_members(members: list[tarfile.TarInfo], required: str) -> None:
    names = {_name(m) for m in members if m.isfile()}
    assert required in names, f"{required} missing from the collection tarball; it has {sorted(names)}"


@pytest.mark.parametrize("args", [[], ["."]], ids=["testpaths", "repo-root"])
def test_pytest_collects_each_test_once(args: list[str]) -> None:
    """No duplicate node ids via the ansible_collections/pdsno/net -> ../.. symlink loop."""
    env = dict(os.environ)
    env[_NESTED_ENV] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--ignore={THIS_FILE}",
            *args,
        ],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = f"{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, f"pytest --collect-only exited {proc.returncode}:\n{output}"

    node_ids = [line.strip() for line in proc.stdout.splitlines() if "::" in line]
    assert node_ids, f"nothing collected:\n{output}"
    duplicates = sorted(node for node, count in Counter(node_ids).items() if count > 1)
    assert duplicates == [], f"test node ids collected more than once: {duplicates}"
    looped = sorted(node for node in node_ids if node.startswith("ansible_collections"))
    assert looped == [], f"tests collected through the ansible_collections symlink: {looped}"
    assert not any(node.startswith(THIS_FILE) for node in node_ids)
