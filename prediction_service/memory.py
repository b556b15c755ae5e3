"""Keep Python's cyclic garbage collector off the request path.

TensorFlow and Keras leave ~400,000 long-lived objects in the process; a full
collection walks all of them and stops the event loop for ~180 ms, which shows
up as a p99 spike every few seconds under load. Freezing moves the objects
that exist after start-up out of the collector's view; after a model swap the
old model's cycles are collected once, and the rest frozen again.
"""

import gc
import threading

_lock = threading.Lock()


def freeze_long_lived() -> None:
    with _lock:
        gc.collect()
        gc.freeze()


def collect_after_swap() -> None:
    with _lock:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
