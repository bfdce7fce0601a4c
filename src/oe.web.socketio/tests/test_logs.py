"""Tests of :mod:`oe_web_socketio.logs`: the rate limit in process, with a
clock of the test's and a real handler, then a flood of garbage against a
real server process."""

from __future__ import annotations

import logging
import signal

import pytest
from oe_web_socketio import logs
from socketio_testing import RawWebSocket, count_lines, lines

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def recorder(clock):
    """A handler with a rate limit of 3 lines a minute, on a logger of the
    test's."""
    handler = Recorder()
    # No request's client: tests that call the application in this
    # greenlet leave theirs in its context.
    token = logs.CLIENT.set(None)
    logger = logging.getLogger("oe_web_socketio.tests.logs")
    handler.rate_limit = logs.RateLimit(3, clock=clock, max_keys=4, summaries=logger)
    handler.addFilter(handler.rate_limit)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.propagate = True
    logs.CLIENT.reset(token)


def log(level, message, *args, client=None, **extra):
    if client is not None:
        extra["client"] = client
    logging.getLogger("oe_web_socketio.tests.logs").log(
        level, message, *args, extra=extra
    )


def test_a_flood_from_one_address_is_summed_up(recorder, clock):
    for n in range(1000):
        log(logging.WARNING, "Closing session %s: garbage", n, client="10.0.0.1")
    assert recorder.messages == [f"Closing session {n}: garbage" for n in range(3)]
    clock.now += 60
    log(logging.WARNING, "Closing session %s: garbage", 1000, client="10.0.0.1")
    assert recorder.messages[3:] == [
        (
            "… and 997 more from 10.0.0.1 like 'Closing session %s: garbage' "
            "in the last 60 s"
        ),
        "Closing session 1000: garbage",
    ]


def test_addresses_and_kinds_are_counted_apart(recorder):
    for _ in range(5):
        log(logging.WARNING, "refused %s", "a", client="10.0.0.1")
        log(logging.WARNING, "refused %s", "b", client="10.0.0.2")
        log(logging.ERROR, "other %s", "c", client="10.0.0.1")
    assert recorder.messages.count("refused a") == 3
    assert recorder.messages.count("refused b") == 3
    assert recorder.messages.count("other c") == 3


def test_what_is_no_client_s_fault_passes(recorder):
    for _ in range(10):
        log(logging.INFO, "event %s", "x", client="10.0.0.1")  # below WARNING
        log(logging.WARNING, "listener %s failed", "oe")  # no client known
    assert len(recorder.messages) == 20


def test_the_address_of_the_request_being_served(recorder):
    token = logs.CLIENT.set("10.0.0.9")
    try:
        for _ in range(5):
            log(logging.WARNING, "refused %s", "x")
    finally:
        logs.CLIENT.reset(token)
    assert recorder.messages == ["refused x"] * 3


def test_access_lines_of_refusals_count_whatever_their_level(recorder, clock):
    token = logs.CLIENT.set("10.0.0.9")
    try:
        for n in range(5):  # formatted already, as gevent's are
            with logs.client_fault():
                log(logging.INFO, f'"POST /socket.io/ HTTP/1.1" 400 {n}')
            log(logging.INFO, f'"GET /health HTTP/1.1" 200 {n}')
    finally:
        logs.CLIENT.reset(token)
    assert len([m for m in recorder.messages if " 400 " in m]) == 3
    assert len([m for m in recorder.messages if " 200 " in m]) == 5
    clock.now += 61
    log(logging.INFO, "anything passing by")
    assert recorder.messages[-2:] == [
        "… and 2 more from 10.0.0.9 of oe_web_socketio.tests.logs in the last 60 s",
        "anything passing by",
    ]


def test_memory_is_bounded(recorder, clock):
    for n in range(100):
        for _ in range(4):
            log(logging.WARNING, "refused %s", n, client=f"10.0.0.{n}")
    assert len(recorder.rate_limit) == 4  # max_keys
    # The keys pushed out were summed up on the way.
    assert "… and 1 more from 10.0.0.0 like 'refused %s' in the last 60 s" in (
        recorder.messages
    )
    clock.now += 60
    log(logging.INFO, "later")
    assert len(recorder.rate_limit) == 0


def test_flush_sums_up_what_is_left(recorder):
    for _ in range(5):
        log(logging.WARNING, "refused %s", "x", client="10.0.0.1")
    recorder.rate_limit.flush()
    assert recorder.messages[-1] == (
        "… and 2 more from 10.0.0.1 like 'refused %s' in the last 60 s"
    )
    assert len(recorder.rate_limit) == 0


def test_zero_lines_is_no_limit(recorder):
    recorder.rate_limit.lines = 0
    for _ in range(10):
        log(logging.WARNING, "refused %s", "x", client="10.0.0.1")
    assert len(recorder.messages) == 10


# --- a real server


def test_a_garbage_flood_costs_a_few_lines(spawn_server, tmp_path):
    config = tmp_path / "oe.cfg"
    config.write_text("[oe_web_socketio]\nlog_rate_limit = 3\n")
    server = spawn_server("-c", str(config))
    for _ in range(6):  # Engine.IO garbage, refused in the request's greenlet
        raw = RawWebSocket(server.url)
        raw.send(";x")
        assert raw.closed()[0] == 1002
    for _ in range(6):  # Socket.IO garbage, refused in a greenlet of its own
        raw = RawWebSocket(server.url)
        raw.send("40", "43[bad")
        assert raw.closed()[0] == 1008
    raw = RawWebSocket(server.url)
    raw.send("40", *['42["nope"]'] * 12)  # events refused one by one
    closing = "Closing session .* from 127.0.0.1: (invalid Engine.IO|malformed)"
    refused = "Refused event 'nope' of .* from 127.0.0.1"
    assert lines(server, closing, 3) == 3
    assert lines(server, refused, 3) == 3
    raw.close()
    server.process.send_signal(signal.SIGTERM)
    assert server.wait() == 0
    summaries = [
        f"… and 9 more from 127.0.0.1 like {template!r} in the last 60 s"
        for template in (
            "Closing session %s from %s: %s",
            "Refused event %s of %r from %s: %s",
        )
    ]
    assert [count_lines(server, summary) for summary in summaries] == [1, 1]
    assert count_lines(server, closing) == count_lines(server, refused) == 3
    # The access lines of the sessions refused (of 12): 3, and a count.
    accepted = r'"GET /socket\.io/\?EIO=4&transport=websocket HTTP/1\.1" 101 '
    assert count_lines(server, accepted) == 3 + 1  # and the socket of events
    assert count_lines(server, "… and 9 more from 127.0.0.1 of .*access") == 1
