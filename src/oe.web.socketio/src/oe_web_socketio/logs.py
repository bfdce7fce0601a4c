"""Log lines about clients' faults, rate-limited per client address.

A client that sends garbage gets one log line per refusal; a flood of
refusals would fill the disk. :class:`RateLimit`, a :class:`logging.Filter`
installed on the server's log handler (:func:`install`), lets through the
first :attr:`RateLimit.lines` such records of one kind (the message's
template, or the logger of a message without one) from one client address
in a window of :attr:`RateLimit.period` seconds, drops the rest, and once
the window is over logs one line with their count::

    … and 1,234 more from 127.0.0.1 like 'Closing session %s: %s' in the last 60 s

So a flood costs at most a few lines a minute per kind of fault, and a
fault of another kind from the same address is still told.

Which records count, and whose they are:

* a record of level ``WARNING`` or above logged while serving a client: its
  address is the ``client`` attribute of the record (``extra={"client":
  …}``), or else :data:`CLIENT`, the address of the client whose request
  the current greenlet serves (set by the WSGI server per connection and
  by the application per request, from a trusted proxy's
  ``X-Forwarded-For``);
* a record logged inside :func:`client_fault` (the access log line of a
  ``4xx`` or ``5xx`` answer), whatever its level;
* a ``WARNING`` or above of the loggers python-engineio and python-socketio
  are given (:data:`CLIENT_FAULT_LOGGERS`), whose every warning is about a
  client, even from a greenlet serving no request: keyed by the message's
  template alone then, as no address is known.

Every other record passes untouched. Invariants: memory is bounded, one
entry per key seen in the last period and at most
:attr:`RateLimit.max_keys` entries (the oldest go first, their count
logged); a window's count is logged when that key logs again after the
window, or when any record passes the filter after it (so a flood that
stops is summed up by the next line of the log, whoever writes it).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator

#: The address of the client whose request the current greenlet serves.
#: Greenlets start with an empty context: one spawned for a client's
#: event does not inherit it (pass ``extra={"client": …}`` there).
CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "oe_web_socketio_client", default=None
)

#: Set inside :func:`client_fault`.
_FAULT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "oe_web_socketio_client_fault", default=False
)

#: Loggers whose warnings are all about clients (see :mod:`.app`).
CLIENT_FAULT_LOGGERS = frozenset(
    {"oe_web_socketio.engineio", "oe_web_socketio.socketio"}
)

#: The attribute marking the summary lines this module logs itself.
SUMMARY = "oe_web_socketio_summary"

#: The logger of the summary lines.
logger = logging.getLogger(__name__)


@contextlib.contextmanager
def client_fault() -> Iterator[None]:
    """Records logged inside count as a client's fault, whatever their
    level."""
    token = _FAULT.set(True)
    try:
        yield
    finally:
        _FAULT.reset(token)


@dataclasses.dataclass
class _Window:
    start: float
    logged: int = 0
    dropped: int = 0


class RateLimit(logging.Filter):
    """Let through at most *lines* records of a client's faults per
    *period* seconds and key (see the module's docstring).

    :param lines: records let through per key and window; ``0``: all.
    :param period: seconds of a window.
    :param max_keys: most keys remembered at once.
    :param clock: the monotonic clock (tests give theirs).
    :param summaries: the logger of the lines that give counts.
    """

    def __init__(
        self,
        lines: int = 20,
        period: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        summaries: logging.Logger = logger,
    ) -> None:
        super().__init__()
        self.summaries = summaries
        self.lines = lines
        self.period = period
        self.max_keys = max_keys
        self.clock = clock
        # Oldest window first: expired ones are at the front.
        self._windows: collections.OrderedDict[str, _Window] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Keys remembered now."""
        return len(self._windows)

    def key(self, record: logging.LogRecord) -> str | None:
        """Whose fault *record* is and of what kind (``from <address> like
        '<template>'``), or ``None`` if it is no client's."""
        if getattr(record, SUMMARY, False):
            return None
        fault = _FAULT.get()
        if record.levelno < logging.WARNING and not fault:
            return None
        # A message formatted before logging (gevent's access log, some of
        # python-engineio's) has no template: its logger stands for it.
        kind = f"like {str(record.msg)[:80]!r}" if record.args else f"of {record.name}"
        address = getattr(record, "client", None) or CLIENT.get()
        if address:
            return f"from {address} {kind}"
        if fault or record.name in CLIENT_FAULT_LOGGERS:
            return kind
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.lines <= 0:
            return True
        now = self.clock()
        key = self.key(record)
        with self._lock:
            ended = self._expire(now)
            allowed = True
            if key is not None:
                window = self._windows.get(key)
                if window is None:
                    window = self._windows[key] = _Window(now)
                    if len(self._windows) > self.max_keys:
                        ended.append(self._windows.popitem(last=False))
                window.logged += 1
                if window.logged > self.lines:
                    window.dropped += 1
                    allowed = False
        for ended_key, window in ended:
            self._summarize(ended_key, window)
        return allowed

    def flush(self) -> None:
        """Log the counts of every window now (at shutdown)."""
        with self._lock:
            ended = list(self._windows.items())
            self._windows.clear()
        for key, window in ended:
            self._summarize(key, window)

    def _expire(self, now: float) -> list[tuple[str, _Window]]:
        """Remove the windows over at *now*; return them."""
        ended = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if now - window.start < self.period:
                break
            del self._windows[key]
            ended.append((key, window))
        return ended

    def _summarize(self, key: str, window: _Window) -> None:
        if window.dropped:
            self.summaries.warning(
                "… and %s more %s in the last %g s",
                f"{window.dropped:,}",
                key,
                self.period,
                extra={SUMMARY: True},
            )


def install(lines: int, handlers: list[logging.Handler] | None = None) -> RateLimit:
    """Put a :class:`RateLimit` of *lines* on *handlers* (default: the root
    logger's); return it. The counts left are logged at exit."""
    rate_limit = RateLimit(lines)
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        handler.addFilter(rate_limit)
    # Registered after logging's own handler: runs before it.
    atexit.register(rate_limit.flush)
    return rate_limit


def shorten(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to about *limit* characters for a log line."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
