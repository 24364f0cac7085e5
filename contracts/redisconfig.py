"""What Turnpike needs from its Redis server, in words an operator can act on.

Redis holds money that Postgres does not have yet: the usage stream (`contracts.events.USAGE_STREAM`,
charges not yet ingested) and the balance hashes (`contracts.balance.bal_key`), whose `pending` is
added when an event is emitted and subtracted when it is acknowledged. Two server settings keep them:

- `maxmemory-policy noeviction`: under any evicting policy, Redis may drop a balance hash or the
  stream when memory runs out. A dropped hash is re-filled from Postgres with `pending` 0, the
  acknowledgements of its events then drive `pending` negative and the workspace can spend money it
  does not have; a dropped stream is usage never billed. With `noeviction` Redis refuses writes
  instead: the proxy spools events to disk and replays them.
- `appendonly yes`: without the append-only file a restart loses everything written since the last
  snapshot: the same lost usage.

The proxy (proxy/runtime.py) and the Celery worker (config/celery.py) read both settings with
`CONFIG GET` at startup and log `requirement_warnings(...)` at WARNING. Managed Redis services often
disable CONFIG: then the warning says the settings could not be checked. Nothing refuses to start:
a warning is enough to act on, and a refusal would turn a misconfiguration into an outage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CHECKED_PARAMETERS = ("maxmemory-policy", "appendonly")
REQUIRED = {"maxmemory-policy": "noeviction", "appendonly": "yes"}
WHY = {
    "maxmemory-policy": "an evicted balance hash or usage stream means usage lost or counted twice",
    "appendonly": "a Redis restart loses the usage stream and pending charges written since the last snapshot",
}
DOC = "see docs/configuration.md, 'Redis requirements'"


def requirement_warnings(values: Mapping[str, str]) -> list[str]:
    """One sentence per required setting that `values` (CONFIG GET answers) does not meet."""
    problems = []
    for name in CHECKED_PARAMETERS:
        actual = values.get(name)
        if actual != REQUIRED[name]:
            shown = "not reported" if actual is None else repr(actual)
            problems.append(f"Redis {name} is {shown}, Turnpike requires {REQUIRED[name]!r}: {WHY[name]} ({DOC})")
    return problems


def unchecked_warning(reason: str) -> str:
    """The warning when CONFIG GET is refused (managed Redis) or Redis did not answer."""
    required = " and ".join(f"{name} {value}" for name, value in REQUIRED.items())
    return (
        f"could not check the Redis server settings ({reason}): make sure it runs with {required}; "
        f"otherwise {WHY['maxmemory-policy']} ({DOC})"
    )


def decode_config(reply: Mapping[Any, Any]) -> dict[str, str]:
    """A CONFIG GET reply (bytes or str, as the client was built) as plain strings."""
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in reply.items()
    }
