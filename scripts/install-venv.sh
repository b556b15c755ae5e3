#!/bin/sh
# Used by the Dockerfile: installs pinned requirements into the image's virtual environment (/opt/venv),
# then drops what the service never reads, pip included (it comes back for the next install).
#   scripts/install-venv.sh requirements-serving.txt
set -eu
python=/opt/venv/bin/python
"$python" -m ensurepip --default-pip >/dev/null
"$python" -m pip install --no-cache-dir -r "$1"
# fastapi-cli pulls uvicorn[standard] and with it uvloop, which uvicorn would then prefer; the service runs on
# asyncio's own loop (see requirements-serving.txt).
"$python" -m pip uninstall -y uvloop pip setuptools
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Test suites (pandas' alone is 46 MB), bytecode caches, and TensorFlow's C++ headers (for building extensions).
find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
rm -rf "$site/tensorflow/include"
