"""Telling people that a retraining job ended: signed webhooks and, when configured, an email.

Only the URLs and addresses in the settings are ever contacted, never one taken
from a request. Each delivery runs in the background with retries and
exponential backoff, so a slow or dead receiver never holds up a job.

Webhook body: JSON with the job id, status, the new and the serving versions and
their hold-out accuracies. Header `X-Signature-SHA256: sha256=<hex>` is the
HMAC-SHA256 of the exact body bytes with WEBHOOK_SECRET as key, so a receiver
can check that the message comes from this service (compare in constant time).
"""

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import smtplib
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Any

import httpx

from prediction_service.core.settings import Settings
from prediction_service.storage.jobs import FAILED, REJECTED, SUCCEEDED, Job

log = logging.getLogger(__name__)

NOTIFIED_STATUSES = (SUCCEEDED, REJECTED, FAILED)
SIGNATURE_HEADER = "X-Signature-SHA256"
RETRIES = 5


def job_summary(job: Job) -> dict[str, Any]:
    result = job.result or {}
    return {
        "event": "retraining.job_ended",
        "job_id": job.id,
        "model": job.model,
        "status": job.status,
        "trigger": job.trigger,
        "status_url": f"/jobs/{job.id}",
        "new_version": result.get("version"),
        "published": result.get("published", False),
        "new_accuracy": result.get("holdout_accuracy"),
        "serving_version": result.get("serving_version"),
        "serving_accuracy": result.get("serving_accuracy"),
        "images": job.upload.get("images"),
        "error": job.error,
        "finished_at": job.finished_at,
    }


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    def __init__(self, settings: Settings) -> None:
        self.urls = [str(url) for url in settings.webhook_urls]
        self.secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        self.backoff = settings.webhook_backoff_seconds
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def email_enabled(self) -> bool:
        return bool(self.settings.smtp_host and self.settings.notify_email_to)

    def job_ended(self, job: Job) -> None:
        """Start the deliveries for a finished job and return at once."""
        if job.status not in NOTIFIED_STATUSES:
            return
        summary = job_summary(job)
        body = json.dumps(summary, sort_keys=True).encode()
        for url in self.urls:
            self._spawn(f"webhook {url}", functools.partial(self._post, url, body))
        if self.email_enabled:
            self._spawn("email", lambda: asyncio.to_thread(self._send_email, summary))

    async def stop(self, grace: float = 2.0) -> None:
        """Give deliveries in flight a moment, then cancel them."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.create_task(self._with_retries(what, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _with_retries(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        for number in range(RETRIES + 1):
            try:
                await attempt()
                log.info("notification sent: %s", what)
                return
            except PermanentFailure as error:
                log.error("notification refused, not retried: %s: %s", what, error)
                return
            except Exception as error:  # noqa: BLE001 - any other failure is worth another try
                delay = self.backoff * 2**number
                if number == RETRIES:
                    log.error("notification failed after %d attempts: %s: %s", RETRIES + 1, what, error)
                    return
                log.warning("notification failed (%s: %s); retrying in %.1f s", what, error, delay)
                await asyncio.sleep(delay)

    async def _post(self, url: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "prediction-service-webhook"}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
            response = await client.post(url, content=body, headers=headers)
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise RuntimeError(f"HTTP {response.status_code}")
        if response.status_code >= 300:
            raise PermanentFailure(f"HTTP {response.status_code}")

    def _send_email(self, summary: dict[str, Any]) -> None:
        settings = self.settings
        message = EmailMessage()
        message["From"] = settings.notify_email_from
        message["To"] = ", ".join(settings.notify_email_to)
        message["Subject"] = f"Retraining job {summary['job_id'][:8]} {summary['status']}"
        lines = [f"{key}: {value}" for key, value in summary.items() if value is not None]
        message.set_content("\n".join(lines) + "\n")
        with smtplib.SMTP(settings.smtp_host or "", settings.smtp_port, timeout=15) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_user and settings.smtp_password:
                smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
            smtp.send_message(message)


class PermanentFailure(Exception):
    """The receiver answered, and retrying would not change its answer."""
