"""Stand-in for pypa's get-pip.py, which ansible-test downloads from a host we cannot reach.

ansible-test bootstraps pip into each sanity virtualenv by running ``get-pip.py <pip args>`` from
``~/.ansible/test/cache/get_pip_<version>.py``. This does the same from what is already here: the
interpreter's bundled pip (``ensurepip``), then ``pip install`` of the requested versions through the
configured package index. tests/collection/ansible_test.sh copies it into the cache when it is missing.
"""

import subprocess
import sys

# get-pip.py's own switches; plain pip does not know them.
_GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

if __name__ == "__main__":
    # In a child process: ensurepip points PIP_CONFIG_FILE at /dev/null in its own environment, which
    # would hide the site's pip configuration (index, certificates) from the install below.
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
    args = [a for a in sys.argv[1:] if a not in _GET_PIP_ONLY]
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))
