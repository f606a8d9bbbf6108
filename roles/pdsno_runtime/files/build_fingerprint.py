"""Print (JSON) a digest of what a wheel build of a pdsno source tree reads - pyproject.toml, setup.cfg,
setup.py and the runtime/ package tree - and of the build's arguments, and whether the last build (its
digest kept in STAMP, its archive ARCHIVE) was made from exactly that: then it need not be built again.

    build_fingerprint.py SOURCE_DIR STAMP ARCHIVE [BUILD ARGUMENT ...]
"""

import hashlib
import json
import os
import sys
from pathlib import Path

root, stamp, archive = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
digest = hashlib.sha256()
for argument in sys.argv[4:]:
    digest.update(argument.encode() + b"\0")
files = [root / name for name in ("pyproject.toml", "setup.cfg", "setup.py") if (root / name).is_file()]
for dirpath, dirnames, filenames in os.walk(root / "runtime"):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.endswith(".egg-info"))
    files += [Path(dirpath) / name for name in sorted(filenames) if not name.endswith((".pyc", ".pyo"))]
for path in files:
    digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
fingerprint = digest.hexdigest()
kept = stamp.read_text().strip() if stamp.is_file() else ""
print(json.dumps({"fingerprint": fingerprint, "fresh": kept == fingerprint and archive.is_file()}))
