"""Retraining from uploaded, labelled data: archive checks, intake, replay, the job queue, the training job."""
