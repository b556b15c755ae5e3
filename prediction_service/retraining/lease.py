"""A worker's side of job leases: who it is, keeping a lease while it trains, and noticing local owners gone.

A lease, not a lock tied to a connection or a file, so that a job survives a host that vanishes silently:
the job store lets another worker claim a job whose lease has expired (storage.jobs.claim_next).
"""

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from prediction_service.storage.jobs import JobStore

log = logging.getLogger(__name__)


def _this_host() -> str:
    """The host and its PID namespace: where a PID in an owner id means this process table's PID."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def worker_id() -> str:
    """A new lease owner id: host/pid-namespace:pid:nonce (the nonce tells apart runners of one process)."""
    return f"{_this_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_gone(owner: str | None) -> bool:
    """Whether `owner` was a process of this host that no longer exists (its lease can end now, not at expiry).
    An owner of another host, or one whose PID lives (perhaps reused), is left to its lease."""
    parts = (owner or "").rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _this_host() or not parts[1].isdigit():
        return False
    return not Path(f"/proc/{parts[1]}").exists()


class LeaseKeeper:
    """Renews a job's lease in a thread every third of its length while the job runs (a thread, so that a busy
    event loop cannot make it lapse); calls `on_lost` once if the lease could not be kept."""

    def __init__(self, jobs: JobStore, job_id: str, owner: str, seconds: float, on_lost: Callable[[], None]) -> None:
        self.jobs, self.job_id, self.owner, self.seconds = jobs, job_id, owner, seconds
        self.on_lost = on_lost
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        valid_until = time.time() + self.seconds
        while not self._stop.wait(self.seconds / 3):
            try:
                if self.jobs.renew(self.job_id, self.owner, self.seconds):
                    valid_until = time.time() + self.seconds
                    continue
            except Exception:  # the database may be back before the lease ends
                log.exception("renewing the lease on job %s failed; retrying", self.job_id)
                if time.time() < valid_until:
                    continue
            log.warning("job %s: lease lost (expired); another worker may run it, this one stops it", self.job_id)
            self.lost = True
            self.on_lost()
            return
