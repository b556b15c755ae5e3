"""The service's own child processes (the model's process, a training job): started one way, set up one way."""

import argparse
import asyncio
import ctypes
import os
import signal
import sys
from typing import Any

from prediction_service.core import logs
from prediction_service.core.settings import Settings


async def start_child(
    module: str, *args: str, settings: Settings, threads: int, **options: Any
) -> asyncio.subprocess.Process:
    """`python -m module args...`, told to die with this process and to log as it does."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        "--parent-pid",
        str(os.getpid()),
        "--threads",
        str(threads),
        "--log-level",
        settings.log_level,
        *(["--json-logs"] if settings.json_logs else []),
        **options,
    )


def child_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options `start_child` passes."""
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--json-logs", action="store_true")
    return parser


def set_up_child(args: argparse.Namespace) -> None:
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    logs.configure(args.log_level, args.json_logs)


def die_with_parent(parent_pid: int) -> None:
    """If the server is killed, this process dies with it instead of living on alone."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)
