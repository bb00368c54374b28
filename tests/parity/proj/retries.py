"""The retrying and semi-predicate tasks of Celery's "Tasks" guide ("Retrying", "Automatic retry
for known exceptions", "Semipredicates").

The guide's tasks fail because a remote service does; these fail a given number of times (counted
in Redis, across worker processes) and then succeed, so a test knows how many retries to expect.
Delays are shortened from the guide's minutes so the suite stays fast; each docstring says which.
"""

from __future__ import annotations

from typing import Any

from celeriac import Task, states
from celeriac.errors import Ignore, Reject
from proj import events
from proj.celery import app


class FailWhaleError(Exception):
    """The guide's ``Twitter.FailWhaleError``: the service is down for now."""


class RequestException(Exception):
    """The guide's ``requests.exceptions.RequestException``."""


def flaky(key: str, failures: int) -> int:
    """Raise FailWhaleError on the first ``failures`` attempts at ``key``; the attempt number."""
    attempt = events.attempt(key)
    if attempt <= failures:
        raise FailWhaleError(f"attempt {attempt} of {key}")
    return attempt


@app.task(bind=True, default_retry_delay=0.05)
def send_twitter_status(self: Task[[str, int], int], oauth: str, failures: int) -> int:
    """``raise self.retry(exc=exc)``; the guide keeps the default delay of 3 minutes."""
    try:
        return flaky(oauth, failures)
    except FailWhaleError as exc:
        raise self.retry(exc=exc) from exc


@app.task(bind=True, default_retry_delay=30 * 60)  # retry in 30 minutes.
def retry_in_a_moment(self: Task[[str], int], key: str) -> int:
    """The guide's countdown of 60 s overrides the default delay; here 0.05 s does."""
    try:
        return flaky(key, 1)
    except Exception as exc:
        # overrides the default delay to retry after a moment
        raise self.retry(exc=exc, countdown=0.05) from exc


@app.task(bind=True, max_retries=2)
def give_up(self: Task[[str], int], key: str) -> int:
    """Fails every time: past ``max_retries`` the retry re-raises the task's own error."""
    try:
        return flaky(key, 100)
    except FailWhaleError as exc:
        raise self.retry(exc=exc, countdown=0) from exc


@app.task(bind=True, max_retries=1)
def give_up_without_exc(self: Task[[str], int], key: str) -> int:
    """Retries without ``exc=``: past ``max_retries`` that is MaxRetriesExceededError."""
    try:
        return flaky(key, 100)
    except FailWhaleError:
        raise self.retry(countdown=0) from None


@app.task(autoretry_for=(FailWhaleError,), retry_kwargs={"max_retries": 5}, default_retry_delay=0)
def refresh_timeline(user: str) -> int:
    """Retried automatically on FailWhaleError (the guide's default delay is 3 minutes)."""
    return flaky(user, 2)


@app.task(autoretry_for=(RequestException,), retry_backoff=True)
def x(key: str) -> int:
    """Exponential back-off: the first retry waits up to 1 s (full jitter)."""
    if events.attempt(key) == 1:
        raise RequestException("the service is down")
    return 2


@app.task(throws=(KeyError,))
def get_foo(key: str) -> None:
    """An expected error: logged at INFO without its traceback, stored as a failure."""
    raise KeyError(key)


# -- Semipredicates ------------------------------------------------------------------------------
@app.task(bind=True)
def some_task(self: Task[[bool], str], revoked: bool) -> str:
    """Ignore: no state is recorded for the task."""
    if revoked:
        raise Ignore()
    return "ran"


@app.task(bind=True)
def get_tweets(self: Task[[str], Any], user: str) -> Any:
    """Ignore after storing the result by hand."""
    timeline = [f"{user}: first", f"{user}: second"]
    if not self.request.called_directly:
        self.update_state(state=states.SUCCESS, meta=timeline)
    raise Ignore()


@app.task(bind=True)
def get_tweets_stored(self: Task[[str], Any], user: str) -> Any:
    """``get_tweets`` without the ``called_directly`` test (see the xfail that needs it)."""
    timeline = [f"{user}: first", f"{user}: second"]
    self.update_state(state=states.SUCCESS, meta=timeline)
    raise Ignore()


@app.task(bind=True, acks_late=True)
def requeues(self: Task[[], str]) -> str:
    if not self.request.delivery_info["redelivered"]:
        raise Reject("no reason", requeue=True)
    print("received two times")
    return "received two times"
