"""The Celery application shared by the worker and beat processes, and the worker's two guards.

Surviving a Redis outage is mostly configuration (the Celery section of config/settings/base.py): the
broker connection is retried forever, and Celery messages are nudges rather than records, so the Redis
transport runs without ack emulation (a broker restart with a task in flight cannot crash the worker).
The usage itself is safe in the Redis stream's consumer group (billing/ingest.py) whatever happens to
a Celery message.

What is left is done here, when the worker is ready:
- the Redis requirements check (contracts.redisconfig): `CONFIG GET maxmemory-policy` and `appendonly`
  on REDIS_URL, logged at WARNING when they are not what the usage pipeline needs;
- the stall watchdog: beat sends `billing.ingest_usage` every TURNPIKE_INGEST_INTERVAL_SECONDS, so a
  worker that has received no task for TURNPIKE_WORKER_STALL_SECONDS while its broker answers PING has
  stopped consuming without noticing (Celery has had such reconnection bugs). It logs CRITICAL and
  shuts the worker down (SIGTERM, then a hard exit if that does not finish), so that its supervisor
  (`make dev`, Kubernetes, compose) starts a fresh one instead of it idling silently. Ingestion loses
  nothing by this: entries a dying worker read are reclaimed by the next one (`claim_stale`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import task_postrun, task_prerun, task_received, worker_ready, worker_shutting_down

from contracts import redisconfig

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("turnpike")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

log = logging.getLogger("turnpike.worker")

WATCHDOG_PERIOD = 5.0  # seconds between stall checks
SHUTDOWN_GRACE = 30.0  # seconds a warm shutdown may take before the watchdog exits hard


def redis_requirement_warnings(url: str) -> list[str]:
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        values: dict[str, str] = {}
        for name in redisconfig.CHECKED_PARAMETERS:
            values.update(redisconfig.decode_config(client.config_get(name)))
    except redis.ResponseError as exc:  # CONFIG disabled or renamed (managed Redis), or no permission
        return [redisconfig.unchecked_warning(f"CONFIG GET refused: {exc}")]
    except redis.RedisError as exc:
        return [redisconfig.unchecked_warning(f"Redis did not answer: {exc}")]
    finally:
        client.close()
    return redisconfig.requirement_warnings(values)


class StallWatchdog:
    """Shuts the worker down when it receives no task for `stall_seconds` while the broker answers."""

    def __init__(self, *, broker_url: str, stall_seconds: float) -> None:
        self.broker_url = broker_url
        self.stall_seconds = stall_seconds
        self.last_activity = time.monotonic()
        self.running_tasks = 0  # tasks executing in this process (the solo pool runs them here)
        self.stopping = threading.Event()

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def start(self) -> None:
        threading.Thread(target=self._run, name="turnpike-stall-watchdog", daemon=True).start()

    def _broker_answers(self) -> bool:
        client = redis.Redis.from_url(self.broker_url, socket_timeout=3, socket_connect_timeout=3)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _run(self) -> None:
        while not self.stopping.wait(WATCHDOG_PERIOD):
            if self.running_tasks:
                self.touch()  # busy is not stalled
                continue
            idle = time.monotonic() - self.last_activity
            if idle < self.stall_seconds:
                continue
            if not self._broker_answers():
                self.touch()  # an outage, not a stall: the consumer reconnects by itself
                continue
            log.critical(
                "this worker has received no task for %.0f s although its broker answers: it has stopped "
                "consuming (or beat is not running). Shutting down so that the supervisor starts a fresh one.",
                idle,
            )
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(SHUTDOWN_GRACE)  # a daemon thread: a shutdown that finishes ends it first
            log.critical("warm shutdown did not finish in %.0f s; exiting now", SHUTDOWN_GRACE)
            logging.shutdown()
            os._exit(70)


_watchdog: StallWatchdog | None = None


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    from django.conf import settings

    for warning in redis_requirement_warnings(settings.REDIS_URL):
        log.warning(warning)
    global _watchdog
    if settings.TURNPIKE_WORKER_STALL_SECONDS > 0 and _watchdog is None:
        _watchdog = StallWatchdog(broker_url=app.conf.broker_url, stall_seconds=settings.TURNPIKE_WORKER_STALL_SECONDS)
        _watchdog.start()


@task_received.connect
def _on_task_received(**kwargs: Any) -> None:
    if _watchdog is not None:
        _watchdog.touch()


@task_prerun.connect
def _on_task_prerun(**kwargs: Any) -> None:
    if _watchdog is not None:
        _watchdog.running_tasks += 1


@task_postrun.connect
def _on_task_postrun(**kwargs: Any) -> None:
    if _watchdog is not None:
        _watchdog.running_tasks -= 1
        _watchdog.touch()


@worker_shutting_down.connect
def _on_worker_shutting_down(**kwargs: Any) -> None:
    if _watchdog is not None:
        _watchdog.stopping.set()
