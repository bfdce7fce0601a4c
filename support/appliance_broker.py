"""The appliance's own redis-server, computed when the buildout runs.

A buildout recipe (entry point ``broker`` of the distribution in this
directory, part ``[redis-program]`` of appliance.cfg) that gives
templates/supervisord.conf.in supervisor's program ``redis`` only where
the appliance runs its own Redis: ``[settings] broker = redis`` with
``broker-url`` the appliance's own URL (``[redis] url``). With the
default broker (PostgreSQL), or a Redis of another machine, there is no
such program at all, rather than one that ends at once, so that every
program supervisor lists is one that runs.

Invariant: this module imports only the standard library and its
sibling appliance_workers (the recipe's frame).
"""

from __future__ import annotations

from collections.abc import MutableMapping

from appliance_workers import ComputedRecipe

#: The brokers ``[settings] broker`` may name (those of the server's own
#: setting, :attr:`oe_web_socketio.config.Config.broker`).
BROKERS = frozenset({"local", "postgresql", "redis"})


class BrokerError(Exception):
    """``[settings] broker`` is invalid; the buildout shows the message."""


def render(options: MutableMapping[str, str]) -> None:
    """Set ``supervisor`` (the program's section, or nothing) and ``runs``
    (``true``/``false``) from ``broker``, ``url``, ``own`` and
    ``program`` (the section's options).

    :raises BrokerError: ``broker`` is not one of :data:`BROKERS`.
    """
    broker = options["broker"].strip()
    if broker not in BROKERS:
        raise BrokerError(
            f"[settings] broker: {broker!r} is not one of {', '.join(sorted(BROKERS))}"
        )
    runs = broker == "redis" and options["url"].strip() == options["own"].strip()
    options["runs"] = "true" if runs else "false"
    options["supervisor"] = (
        f"[program:redis]\n{options['program'].strip()}\n" if runs else ""
    )


class Recipe(ComputedRecipe):
    """The broker's recipe (entry point ``broker``)."""

    error = BrokerError

    def compute(self, options: MutableMapping[str, str]) -> None:
        render(options)
