"""No network access from the libraries the service runs.

ONNX Runtime 1.32 on Linux sends usage telemetry to Microsoft (1DS) and
writes a device identifier to disk unless `ORT_DISABLE_TELEMETRY=1` is set
before it starts. A model server must not call out behind its operator's
back, so the opt-out is set for this process and every process it starts
(the mnist model's process, training jobs, decoding processes). An operator
who wants the telemetry sets ORT_DISABLE_TELEMETRY=0 explicitly.
"""

import os


def keep_libraries_offline() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
