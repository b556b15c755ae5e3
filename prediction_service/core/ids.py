"""Ids the service gives out."""

import secrets
import time


def new_prediction_id() -> str:
    """A prediction's id: 32 hex digits, the time in milliseconds then 80 random bits (UUIDv7's layout).

    Time-ordered, so the prediction log's index grows at one end instead of dirtying a random page per row
    (the writer's cost); random enough that no one guesses another's id, and no two processes give out the same.
    """
    return f"{time.time_ns() // 1_000_000:012x}{secrets.randbits(80):020x}"
