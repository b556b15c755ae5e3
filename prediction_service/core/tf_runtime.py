"""TensorFlow process settings that must be made before its runtime starts."""

import logging
import os

log = logging.getLogger(__name__)


def quiet() -> None:
    """Hide TensorFlow's C++ start-up chatter (oneDNN, CPU features) unless asked for."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def limit_threads(intra_op: int, inter_op: int = 1) -> None:
    """Bound TensorFlow's thread pools so it shares the CPU with the HTTP server.

    Only takes effect before the first TensorFlow operation runs in this process.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        log.debug("TensorFlow already running; thread limits unchanged")
