"""A FastAPI service that serves a penguin-species KNN and a handwritten-digit CNN."""

from prediction_service.core.offline import keep_libraries_offline
from prediction_service.core.tf_runtime import quiet

keep_libraries_offline()  # before anything imports ONNX Runtime
quiet()  # before anything imports TensorFlow
