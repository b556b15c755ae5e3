"""Retraining the mnist model from uploaded, labelled images: intake, queue, and the training job."""
