"""Ids the service gives out."""

import uuid


def new_prediction_id() -> str:
    """A prediction's id: random, so it reveals nothing and no two processes ever give out the same one."""
    return uuid.uuid4().hex
