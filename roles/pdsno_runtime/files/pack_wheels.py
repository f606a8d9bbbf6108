"""Pack a directory of wheels into one tar whose bytes depend only on the wheels (sorted names, zero
times and owners): one file to copy per host, copied again only when a wheel changed."""

import sys
import tarfile
from pathlib import Path

source, target = Path(sys.argv[1]), Path(sys.argv[2])
with tarfile.open(target, "w", format=tarfile.GNU_FORMAT) as tar:
    for wheel in sorted(source.glob("*.whl")):
        info = tar.gettarinfo(str(wheel), arcname=wheel.name)
        info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
        with wheel.open("rb") as handle:
            tar.addfile(info, handle)
