"""Retraining the digit model from uploaded, labelled images: intake, queue, and the training job."""
