"""Long-polling routes for tests/test_longpolling.py, loaded by the server
under test (``longpolling_modules = tests.longpolling_routes``), never by
the appliance: some of them hold a database cursor on request.

Each route exercises one thing of :mod:`oe_web_socketio.longpolling`
against the real trytond: the user's models and context, refused writes,
SQL that takes its time, waiting, failures.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gevent.event
import psycopg
from oe_web_socketio.longpolling import LongPollingRequest, longpolling

#: Handlers waiting in ``/t/wait_after_read`` right now.
WAITING = {"count": 0}
#: Never set: waiting for it ends at the long-polling timeout.
NEVER = gevent.event.Event()


class Mailbox:
    """Messages posted by ``/t/post``, awaited by ``/t/next``."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.changed = gevent.event.Event()

    def post(self, message: Any) -> int:
        self.messages.append(message)
        changed, self.changed = self.changed, gevent.event.Event()
        changed.set()
        return len(self.messages)


MAILBOX = Mailbox()


@longpolling.route("/t/echo/<word>", mustbeauthenticated=False)
def echo(request: LongPollingRequest, word: str, **params: Any) -> dict[str, Any]:
    return {
        "word": word,
        "params": params,
        "uid": request.uid,
        "context": request.context,
    }


@longpolling.route("/t/text/<word>", mode="http", mustbeauthenticated=False)
def text(request: LongPollingRequest, word: str) -> str:
    return f"hello {word}"


@longpolling.route("/t/whoami")
@longpolling.route("/t/whoami/<int:times>")
def whoami(request: LongPollingRequest, times: int = 1) -> dict[str, Any]:
    user = request.model("res.user")(request.uid)
    return {
        "uid": request.uid,
        "login": request.login,
        "name": user.name,
        "language": request.context.get("language"),
        "times": times,
    }


@longpolling.route("/t/whoami_http", mode="http")
def whoami_http(request: LongPollingRequest) -> str:
    return request.model("res.user")(request.uid).login


@longpolling.route("/t/users")
def users(request: LongPollingRequest) -> list[str]:
    """Logins of the users the user may read (access rights apply)."""
    user = request.model("res.user")
    return sorted(u.login for u in user.search([]))


@longpolling.route("/t/groups")
def groups(request: LongPollingRequest) -> list[int]:
    """The user's groups, which trytond caches per process."""
    return sorted(request.model("res.user").get_groups())


@longpolling.route("/t/anon_model", mustbeauthenticated=False)
def anon_model(request: LongPollingRequest) -> None:
    request.model("res.user")


@longpolling.route("/t/write")
def write(
    request: LongPollingRequest, how: str, name: str, target: int
) -> dict[str, Any]:
    """Try to rename the user *target*, through the models or in SQL."""
    user = request.model("res.user")
    try:
        if how == "orm":
            user.write([user(target)], {"name": name})
        else:
            request.cursor().execute(
                "UPDATE res_user SET name = %s WHERE id = %s", (name, target)
            )
    except psycopg.Error as exc:
        return {"refused": type(exc).__name__, "sqlstate": exc.sqlstate}
    return {"refused": None}


@longpolling.route("/t/sleep")
def sleep(request: LongPollingRequest, seconds: str = "0.5") -> dict[str, Any]:
    """Spend *seconds* in SQL; answer when it started and ended, in the
    database's clock, and the backend that ran it."""
    cursor = request.cursor()
    cursor.execute("SELECT extract(epoch FROM clock_timestamp()), pg_backend_pid()")
    start, pid = cursor.fetchone()
    cursor.execute("SELECT pg_sleep(%s)", (float(seconds),))
    cursor.execute("SELECT extract(epoch FROM clock_timestamp())")
    (end,) = cursor.fetchone()
    return {"start": float(start), "end": float(end), "pid": pid}


@longpolling.route("/t/boom")
def boom(request: LongPollingRequest) -> None:
    request.model("res.user")
    raise RuntimeError("boom from a handler")


@longpolling.route("/t/wait", mustbeauthenticated=False)
def wait(request: LongPollingRequest) -> None:
    request.wait(NEVER)


@longpolling.route("/t/wait_after_read")
def wait_after_read(request: LongPollingRequest) -> None:
    request.model("res.user")(request.uid).name  # noqa: B018 - opens a transaction
    WAITING["count"] += 1
    try:
        request.wait(NEVER)
    finally:
        WAITING["count"] -= 1


@longpolling.route("/t/state", mustbeauthenticated=False)
def state(request: LongPollingRequest) -> dict[str, Any]:
    orm = request._orm
    gate = orm.stats(request.database) if orm is not None else None
    return {
        "waiting": WAITING["count"],
        "gate": None if gate is None else dataclasses.asdict(gate),
    }


@longpolling.route("/t/post", mustbeauthenticated=False)
def post(request: LongPollingRequest, message: Any) -> int:
    return MAILBOX.post(message)


@longpolling.route("/t/next", mustbeauthenticated=False)
def next_messages(request: LongPollingRequest, after: Any = 0) -> dict[str, Any]:
    """The messages after the first *after*, waiting for one if none."""
    after = int(after)
    # Bounded: wait() raises PollTimeout at the deadline.
    while len(MAILBOX.messages) <= after:
        request.wait(MAILBOX.changed)
    return {"messages": MAILBOX.messages[after:], "next": len(MAILBOX.messages)}


@longpolling.route("/t/count/<model>")
def count(request: LongPollingRequest, model: str) -> dict[str, Any]:
    """How many records of *model* the user may read, or that he may not."""
    from trytond.model.exceptions import AccessError

    try:
        return {"count": request.model(model).search_count([])}
    except AccessError as exc:
        return {"denied": type(exc).__name__}


@longpolling.route("/t/read_only")
def read_only(request: LongPollingRequest) -> dict[str, str]:
    cursor = request.cursor()
    names = (
        "transaction_read_only",
        "default_transaction_read_only",
        "application_name",
    )
    return {name: cursor.execute(f"SHOW {name}").fetchone()[0] for name in names}
