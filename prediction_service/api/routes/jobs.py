"""Retraining: upload labelled images or penguins, then follow the job."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Query, Response, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from prediction_service.api.deps import RegistryDep, RetrainingDep, ServingDep
from prediction_service.api.errors import error_responses
from prediction_service.api.schemas import JobInfo, JobList, part_media_types
from prediction_service.api.security import AdminDep
from prediction_service.models.mnist import MNIST
from prediction_service.models.penguins import PENGUINS
from prediction_service.services import Retraining, Serving
from prediction_service.storage.jobs import QUEUED, RUNNING, Job, JobStore

router = APIRouter(tags=["retraining"])

ZIP = "application/zip"
CSV = "text/csv"
JobId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="A job id, as POST /upload-images answered it.")]


def job_info(job: Job) -> JobInfo:
    return JobInfo(
        job_id=job.id,
        model=job.model,
        trigger=job.trigger,
        status=job.status,
        status_url=f"/jobs/{job.id}",
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        upload=job.upload,  # type: ignore[arg-type]
        parameters=job.params,
        progress=job.progress,
        history=job.history,
        result=job.result,
        error=job.error,
    )


@router.post(
    "/upload-images",
    status_code=202,
    summary="Retrain the mnist model on a zip of labelled images",
    description="Needs the admin token. Multipart field `file`: a zip with PNG images and one `.txt` of "
    "whitespace-separated labels 0-9 in the order of the sorted image names, or with the images in folders "
    "named `0`-`9`. The zip is checked completely, stored, and a job is queued: the answer is 202 with the "
    "job's id; GET the `status_url` to follow it. The new version serves only if its hold-out accuracy is "
    "at most RETRAIN_GATE_MARGIN below the serving version's.",
    dependencies=[AdminDep],
    responses=error_responses(400, 401, 403, 413, 415, 422, 503),
    openapi_extra=part_media_types("file", ZIP),
)
async def upload_images(
    file: UploadFile,
    background_tasks: BackgroundTasks,
    retraining: RetrainingDep,
    registry: RegistryDep,
    response: Response,
) -> JobInfo:
    registry.get(MNIST)  # retraining starts from the serving version: 503 with the reason while there is none
    job = await run_in_threadpool(retraining.intake.accept, MNIST, file.file, file.filename)
    return queued(job, retraining, background_tasks, response)


@router.post(
    "/upload-penguins",
    status_code=202,
    summary="Retrain the penguin model on a CSV of labelled penguins",
    description="Needs the admin token. Multipart field `file`: a UTF-8 CSV whose header names "
    "`species,bill_length_mm,flipper_length_mm` (in any order; other columns are ignored), with one penguin a "
    "row: a species of the serving version, lengths in millimetres within plausible ranges (bill 20-80, flipper "
    "120-280). At most MAX_CSV_ROWS rows and MAX_CSV_BYTES bytes. The file is checked completely (a refusal "
    "lists the lines to fix, and nothing is stored), stored, and a job is queued: 202 with the job's id. The "
    "job refits the pipeline on the serving version's training rows plus these; the new version serves only "
    "if its hold-out accuracy is at most RETRAIN_GATE_MARGIN below the serving version's and its fast path "
    "answers exactly as its pipeline.",
    dependencies=[AdminDep],
    responses=error_responses(400, 401, 403, 413, 415, 422, 503),
    openapi_extra=part_media_types("file", CSV),
)
async def upload_penguins(
    file: UploadFile,
    background_tasks: BackgroundTasks,
    retraining: RetrainingDep,
    registry: RegistryDep,
    response: Response,
) -> JobInfo:
    # Retraining starts from the serving version (503 while there is none), whose species the rows may name.
    species = registry.labels(PENGUINS)
    job = await run_in_threadpool(retraining.intake.accept_penguin_rows, file.file, file.filename, species)
    return queued(job, retraining, background_tasks, response)


def queued(job: Job, retraining: Retraining, background_tasks: BackgroundTasks, response: Response) -> JobInfo:
    """The answer to an accepted upload: the job, its Location; this process's job runner woken after it
    (the task only wakes it; the training itself runs in a subprocess)."""
    background_tasks.add_task(retraining.runner.kick)
    response.headers["Location"] = f"/jobs/{job.id}"
    return job_info(job)


@router.get("/jobs", summary="Retraining jobs, newest first")
async def list_jobs(
    retraining: RetrainingDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="How many jobs to list.")] = 50,
) -> JobList:
    return JobList(jobs=[job_info(job) for job in await run_in_threadpool(retraining.jobs.recent, limit)])


@router.get("/jobs/{job_id}", summary="A retraining job's state and progress", responses=error_responses(404, 422))
async def get_job(job_id: JobId, retraining: RetrainingDep, serving: ServingDep) -> JobInfo:
    job = await run_in_threadpool(retraining.jobs.get, job_id)
    await serving.refresh()  # a job that reads final: this process serves its outcome
    return job_info(job)


@router.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    summary="Run an interrupted or failed job again, on its stored upload",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
async def retry_job(
    job_id: JobId, retraining: RetrainingDep, registry: RegistryDep, background_tasks: BackgroundTasks
) -> JobInfo:
    # Retraining starts from the serving version of the job's model: 503 with the reason while there is none.
    registry.get((await run_in_threadpool(retraining.jobs.get, job_id)).model)
    job = await run_in_threadpool(retraining.jobs.retry, job_id)
    background_tasks.add_task(retraining.runner.kick)
    return job_info(job)


EVENT_POLL_SECONDS = 0.5
RECONNECT_MS = 1000
EVENT_STREAM_SECONDS = 10  # then the browser's EventSource reconnects by itself (and no proxy or client times out)
HEARTBEAT_SECONDS = 10


@router.get(
    "/jobs/{job_id}/events",
    summary="A retraining job's progress as server-sent events",
    description="`event: job` with the job (as GET /jobs/{job_id}) whenever it changes, and `event: end` once it "
    "is final. Streams last at most 10 s; an EventSource reconnects by itself.",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {}}}}, **error_responses(404, 422)},
)
async def job_events(job_id: JobId, retraining: RetrainingDep, serving: ServingDep) -> StreamingResponse:
    first = await run_in_threadpool(retraining.jobs.get, job_id)  # 404 before the stream starts
    return StreamingResponse(
        _job_events(retraining.jobs, serving, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _job_events(jobs: JobStore, serving: Serving, job: Job) -> AsyncIterator[str]:
    started = last_sent = time.monotonic()
    previous = None
    yield f"retry: {RECONNECT_MS}\n\n"  # when a stream ends before the job, the browser is back within a second
    while True:
        payload = job_info(job).model_dump_json()
        if payload != previous:
            previous, last_sent = payload, time.monotonic()
            yield f"event: job\ndata: {payload}\n\n"
        if job.status not in (QUEUED, RUNNING):
            await serving.refresh()
            yield "event: end\ndata: {}\n\n"
            return
        if time.monotonic() - started > EVENT_STREAM_SECONDS:
            return
        if time.monotonic() - last_sent > HEARTBEAT_SECONDS:
            last_sent = time.monotonic()
            yield ": still running\n\n"
        await asyncio.sleep(EVENT_POLL_SECONDS)
        job = await run_in_threadpool(jobs.get, job.id)
