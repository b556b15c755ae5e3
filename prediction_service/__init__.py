"""A FastAPI service that serves a penguin-species KNN and a handwritten-digit CNN."""

from prediction_service.ml.tf_runtime import quiet
from prediction_service.offline import keep_libraries_offline

keep_libraries_offline()  # before anything imports ONNX Runtime
quiet()  # before anything imports TensorFlow
