"""A FastAPI service that serves a penguin-species KNN and a handwritten-digit CNN."""

from prediction_service.ml.tf_runtime import quiet

quiet()  # before anything imports TensorFlow
