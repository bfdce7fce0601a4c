"""The real-time workers of the appliance, computed when the buildout runs.

A buildout recipe (entry point ``workers`` of the distribution in this
directory, part ``[socketio-workers]`` of appliance.cfg) that reads
``[settings] socketio-workers`` and ``socketio-remote-workers`` and sets,
for templates/supervisord.conf.in and templates/nginx.conf.in, the text
that repeats per worker: supervisor's programs and nginx's upstreams and
the map from a session id's prefix to its worker's upstream. Neither
template language loops, and the core count is the building machine's.

Invariants:

* Local worker *i* (from 0) is named ``w<i>`` and listens on
  ``[ports] socketio + i``; its name is given to it on its command line
  (``--worker``), and starts every session id it makes (``w0.…``).
* Every worker, local or remote, has its own upstream
  ``oe_web_socketio_<name>``, which nginx picks for a request whose ``sid``
  starts with ``<name>.``; every worker is also a server of the shared
  upstream ``oe_web_socketio``, which takes every request without a
  session (handshakes, the Tryton bus, long polls, ``/health``).
* Names are unique and match the server's own check
  (:data:`oe_web_socketio.config.WORKER_NAME`, repeated here since the
  buildout runs before the egg is importable); a bad setting fails the
  buildout with a message naming it.
* This module imports only the standard library.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

#: A worker's name: what :data:`oe_web_socketio.config.WORKER_NAME` accepts.
WORKER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")

#: ``host:port`` or ``[v6]:port`` of a remote worker.
ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")

#: The upstream of requests without a session, and the prefix of each
#: worker's own upstream.
SHARED_UPSTREAM = "oe_web_socketio"


class WorkersError(Exception):
    """A setting of the workers is invalid; the buildout shows the message."""


@dataclass(frozen=True)
class Worker:
    """A worker behind nginx: its name and ``host:port``."""

    name: str
    address: str

    @property
    def upstream(self) -> str:
        return f"{SHARED_UPSTREAM}_{self.name}"


def core_count() -> int:
    """The cores this process may run on (its CPU affinity, which a
    container or ``taskset`` narrows), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def worker_count(setting: str) -> int:
    """``[settings] socketio-workers``: a positive number, or ``auto`` or
    empty for :func:`core_count`.

    :raises WorkersError: anything else.
    """
    value = setting.strip().lower()
    if value in ("", "auto"):
        return core_count()
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise WorkersError(
            f"[settings] socketio-workers: a number from 1 to 64, or auto, "
            f"not {setting.strip()!r}"
        )
    return int(value)


def local_workers(count: int, first_port: int) -> list[Worker]:
    """``w0`` … on ``127.0.0.1``, ports from *first_port* upward."""
    if first_port + count - 1 > 65535:
        raise WorkersError(
            f"[ports] socketio: {count} workers from port {first_port} go past 65535"
        )
    return [Worker(f"w{i}", f"127.0.0.1:{first_port + i}") for i in range(count)]


def remote_workers(setting: str) -> list[Worker]:
    """``[settings] socketio-remote-workers``: one ``NAME HOST:PORT`` a
    line (blank lines and ``#`` comments skipped).

    :raises WorkersError: a line is not that.
    """
    workers = []
    for text in setting.splitlines():
        line = text.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        address = ADDRESS.fullmatch(fields[-1]) if len(fields) == 2 else None
        if address is None or not WORKER_NAME.fullmatch(fields[0]):
            raise WorkersError(
                "[settings] socketio-remote-workers: each line is NAME HOST:PORT "
                "(NAME of letters, digits, _ and -, as the worker's own "
                f"[oe_web_socketio] worker), not {line!r}"
            )
        if not 1 <= int(address.group(2)) <= 65535:
            raise WorkersError(
                f"[settings] socketio-remote-workers: no port {address.group(2)}"
            )
        workers.append(Worker(fields[0], fields[1]))
    return workers


def check_unique(workers: Sequence[Worker]) -> None:
    """:raises WorkersError: two workers share a name or an address."""
    for key in ("name", "address"):
        seen = [getattr(worker, key) for worker in workers]
        twice = sorted({value for value in seen if seen.count(value) > 1})
        if twice:
            raise WorkersError(
                f"two real-time workers have the {key} {twice[0]} (the local "
                "ones are w0, w1… on [ports] socketio upward; see "
                "[settings] socketio-remote-workers)"
            )


def supervisor_programs(workers: Sequence[Worker], program: str) -> str:
    """supervisor's section of each local worker and their group
    ``oe_web_socketio``, from *program*, the options of one with
    ``{name}`` and ``{port}`` in place of the worker's."""
    sections = []
    for worker in workers:
        port = worker.address.rsplit(":", 1)[1]
        body = program.strip().replace("{name}", worker.name).replace("{port}", port)
        sections.append(f"[program:{worker.name}]\n{body}\n")
    names = ",".join(worker.name for worker in workers)
    sections.append(f"[group:{SHARED_UPSTREAM}]\nprograms = {names}\n")
    return "\n".join(sections)


def nginx_map(workers: Sequence[Worker]) -> str:
    """The lines of nginx's ``map $arg_sid``: a session id that starts
    with ``<name>.`` goes to that worker's upstream."""
    return "\n".join(
        f"        ~^{re.escape(worker.name)}\\. {worker.upstream};"
        for worker in workers
    )


def nginx_servers(workers: Sequence[Worker], server_options: str) -> str:
    """The servers of the shared upstream, each with *server_options*."""
    return "\n".join(
        f"        server {worker.address} {server_options.strip()};".replace(" ;", ";")
        for worker in workers
    )


def nginx_upstreams(workers: Sequence[Worker]) -> str:
    """One upstream per worker, the one server that holds its sessions."""
    return "\n".join(
        f"    upstream {worker.upstream} {{\n        server {worker.address};\n    }}"
        for worker in workers
    )


def render(options: MutableMapping[str, str]) -> None:
    """Set the computed options of the part from its settings.

    In: ``workers``, ``remote``, ``port``, ``program``, ``server-options``.
    Out: ``count``, ``names``, ``supervisor``, ``nginx-map``,
    ``nginx-servers``, ``nginx-upstreams``.

    :raises WorkersError: a setting is invalid.
    """
    try:
        first_port = int(options["port"])
    except ValueError:
        raise WorkersError(
            f"[ports] socketio: not a port: {options['port']!r}"
        ) from None
    local = local_workers(worker_count(options.get("workers", "")), first_port)
    every = [*local, *remote_workers(options.get("remote", ""))]
    check_unique(every)
    options["count"] = str(len(local))
    options["names"] = " ".join(worker.name for worker in local)
    options["supervisor"] = supervisor_programs(local, options["program"])
    options["nginx-map"] = nginx_map(every)
    options["nginx-servers"] = nginx_servers(every, options.get("server-options", ""))
    options["nginx-upstreams"] = nginx_upstreams(every)


class ComputedRecipe:
    """A buildout recipe that computes its options when the buildout reads
    the part (the templates' parts then substitute them) and installs
    nothing: :meth:`compute` sets them, and its :attr:`error` fails the
    buildout with its message. This module's :class:`Recipe`, and
    appliance_broker's."""

    error: ClassVar[type[Exception]]

    def __init__(
        self, buildout: Any, name: str, options: MutableMapping[str, str]
    ) -> None:
        try:
            self.compute(options)
        except self.error as error:
            import zc.buildout

            raise zc.buildout.UserError(str(error)) from None

    def compute(self, options: MutableMapping[str, str]) -> None:
        """Set the computed options from the others.

        :raises error: a setting is invalid.
        """
        raise NotImplementedError

    def install(self) -> tuple[str, ...]:
        return ()

    update = install


class Recipe(ComputedRecipe):
    """The workers' recipe (entry point ``workers``)."""

    error = WorkersError

    def compute(self, options: MutableMapping[str, str]) -> None:
        render(options)
