"""Cron expressions (RETRAIN_SCHEDULE), read by croniter: 5 fields, or 6 with seconds last."""

from datetime import UTC, datetime

from croniter import CroniterError, croniter

CRON_HELP = (
    "a cron expression of 5 fields (minute hour day-of-month month day-of-week, e.g. '0 3 * * *': "
    "every day at 03:00 UTC) or 6 (a sixth for the seconds, e.g. '* * * * * */10': every 10 s)"
)


def check_cron(expression: str) -> str:
    """The expression if croniter reads it; else a ValueError that says what is expected."""
    try:
        croniter(expression, datetime.now(UTC))
    except (CroniterError, ValueError, KeyError) as error:
        raise ValueError(f"{expression!r} is not a cron expression ({error}); write {CRON_HELP}") from None
    return expression


def next_time(expression: str, after: datetime) -> datetime:
    """The first time after `after` that the expression names (UTC, as `after`)."""
    following: datetime = croniter(expression, after).get_next(datetime)
    return following
