"""Property-based fuzzing (Hypothesis) of what parses clients' HTTP: the
bus's poll parser and endpoint (:mod:`oe_web_socketio.hosts.tryton.bus`), the
long-polling routes' parameters (:mod:`oe_web_socketio.longpolling`), the
request body reader and the router (:mod:`oe_web_socketio.routing`).

One property throughout: any input gets a valid result or a refusal
(:class:`~oe_web_socketio.routing.HTTPError` with a ``4xx`` status, or a
``4xx`` answer), never another exception, never a ``5xx``. The routes are
called in process through their :class:`~oe_web_socketio.routing.Router`
(the WSGI application the server runs), with real authenticators of a
few sessions in a dict; the same routes over real sockets are in
``test_http_abuse.py``, ``test_bus.py`` and ``test_longpolling.py``.

Examples are few and small enough to keep the whole file to a few
seconds; ``deadline=None`` because the machine running the suite is
shared.
"""

from __future__ import annotations

import base64
import io
import json
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from oe_web_socketio import longpolling as lp
from oe_web_socketio.auth import Credentials, Identity
from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import AuthenticationError
from oe_web_socketio.hosts.tryton import TrytonSessions
from oe_web_socketio.hosts.tryton.bus import USER_CHANNELS, TrytonBus, own_channels
from oe_web_socketio.outbox import parse_position
from oe_web_socketio.routing import HTTPError, Request, Response, Route, Router

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEY = "k" * 64
SESSION = base64.b64encode(f"admin:1:{KEY}".encode()).decode()


class DictAuthenticator:
    """One session: uid 1 with :data:`KEY`, on any served database."""

    def authenticate(self, credentials: Credentials, address: str | None) -> Identity:
        if (credentials.uid, credentials.key) != (1, KEY):
            raise AuthenticationError("invalid session")
        return Identity(db=credentials.database or "oe", uid=1, login="admin")


def environ(
    method: str = "POST",
    path: str = "/",
    *,
    body: bytes = b"",
    query: str = "",
    headers: dict[str, str] | None = None,
    content_length: str | None = None,
) -> dict[str, Any]:
    """A WSGI environ as gevent's server builds it (strings are Latin-1
    for the bytes received)."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)) if content_length is None else content_length,
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": "127.0.0.1",
    }
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        env[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
    return env


def call(router: Router, env: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        answer["status"] = int(status.split()[0])
        answer["headers"] = dict(headers)

    body = b"".join(router(env, start_response))
    return answer["status"], answer["headers"], body


def assert_answered(status: int, headers: dict[str, str], body: bytes) -> None:
    """A success, or a client error saying why as ``{"error": ...}``."""
    assert status < 500, (status, body)
    if status >= 400 and body:
        assert isinstance(json.loads(body)["error"], str)


#: Text as it arrives in WSGI strings: any byte, as Latin-1.
wsgi_text = st.binary(max_size=200).map(lambda raw: raw.decode("latin-1"))

#: JSON values, nested a little.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)

#: What a client may name as channels: those of sao and of other users.
channel_names = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda prefix, suffix: prefix + suffix,
        st.sampled_from(["user:", "notification:", "client:", "chat:", "USER:"]),
        st.text(max_size=10),
    ),
)

#: Bodies: JSON shaped as a poll, nearly, or not at all.
poll_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "channels": st.one_of(st.lists(channel_names, max_size=8), json_values),
            "last_message": json_values,
        },
    ).map(lambda value: json.dumps(value).encode()),
)


# --- the bus


@pytest.fixture(scope="module")
def bus() -> TrytonBus:
    config = Config(databases=("oe",), bus_long_polling_timeout=0.001)
    bus = TrytonBus(config, DictAuthenticator())
    # A message on the caller's own channel, which every poll gets: a
    # valid poll is answered at once.
    bus.notify("oe", json.dumps({"channel": "user:1", "message": {"message_id": "m"}}))
    return bus


@FUZZ
@given(
    body=poll_bodies,
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_any_poll_body_is_a_poll_or_a_4xx(bus, body, content_type):
    request = Request(environ(body=body, headers={"Content-Type": content_type}))
    try:
        channels, _last_message = bus._read_poll(request)
    except HTTPError as exc:
        assert 400 <= exc.status < 500
        return
    assert isinstance(channels, list)
    assert all(isinstance(channel, str) for channel in channels)
    assert len(channels) <= bus.max_channels
    assert all(len(channel) <= bus.max_channel_length for channel in channels)


@FUZZ
@given(
    body=poll_bodies,
    headers=st.dictionaries(
        st.sampled_from(
            [
                "Content-Type",
                "Content-Encoding",
                "Authorization",
                "Cookie",
                "X-Forwarded-For",
                "X-Requested-With",
            ]
        ),
        wsgi_text,
        max_size=3,
    ),
    origin=st.one_of(
        st.none(),
        st.sampled_from(["http://[::1", "null", "http://localhost", "http://evil"]),
        wsgi_text,
    ),
    database=st.sampled_from(["oe", "other", "%FF", ""]),
    method=st.sampled_from(["POST", "GET", "PUT", "HEAD"]),
)
# Found before: an Origin urlsplit refuses was a 500.
@example(body=b"{}", headers={}, origin="http://[::1", database="oe", method="POST")
def test_any_bus_request_is_answered_below_500(
    bus, body, headers, origin, database, method
):
    headers = {"Content-Type": "application/json", **headers}
    headers.setdefault("Authorization", f"Session {SESSION}")
    if origin is not None:
        headers["Origin"] = origin
    router = Router([bus.route()])
    env = environ(method, f"/{database}/bus", body=body, headers=headers)
    status, answer_headers, answer = call(router, env)
    assert_answered(status, answer_headers, answer if status != 401 else b"")
    if status == 200:
        assert json.loads(answer)["channel"] == "user:1"


@FUZZ
@given(asked=st.lists(channel_names, max_size=10), uid=st.integers(1, 10**6))
def test_a_poll_listens_to_no_other_users_channels(asked, uid):
    channels = own_channels(asked, uid)
    assert f"user:{uid}" in channels
    for channel in channels:
        if channel.startswith(USER_CHANNELS):
            assert channel.partition(":")[2] == str(uid)
    # Every other channel asked for is kept.
    assert {c for c in asked if not c.startswith(USER_CHANNELS)} <= channels


# --- long-polling routes


registry = lp.LongPolling()


@registry.route("/echo/<word>", mustbeauthenticated=False)
def echo(request: lp.LongPollingRequest, word: str, **params: Any) -> Any:
    return {"word": word, "params": params}


@registry.route("/typed/<int:number>", mustbeauthenticated=False)
def typed(request: lp.LongPollingRequest, number: int, since: str | None = None) -> Any:
    # What a handler does with a client's position.
    return {"number": number, "since": parse_position(since)}


@registry.route("/private")
def private(request: lp.LongPollingRequest) -> Any:
    return request.uid


@pytest.fixture(scope="module")
def lp_router() -> Router:
    router = Router()
    settings_ = lp.Settings(
        prefix="/longpolling",
        timeout=1.0,
        databases=("oe",),
        trusted_proxies=("127.0.0.1",),
        max_body=100_000,  # above what is generated: a 413 is no answer here
        host=TrytonSessions(DictAuthenticator()),
    )
    lp.add_routes(router, lp.endpoints(registry.routes, settings_))
    return router


lp_paths = st.one_of(
    st.sampled_from(
        [
            "/longpolling/echo/x",
            "/longpolling/typed/1",
            "/longpolling/typed/99999999999999999999",
            "/longpolling/typed/-1",
            "/longpolling/private",
        ]
    ),
    st.builds(lambda tail: "/longpolling/" + tail, wsgi_text),
)


@FUZZ
@given(
    path=lp_paths,
    method=st.sampled_from(["GET", "POST", "HEAD", "DELETE"]),
    query=st.one_of(
        wsgi_text,
        st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=4).map(
            lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
        ),
    ),
    body=poll_bodies,
    content_type=st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/ld+json; charset=x",
            "",
        ]
    ),
    headers=st.dictionaries(
        st.sampled_from(["Authorization", "Cookie", "X-Tryton-Database"]),
        wsgi_text,
        max_size=2,
    ),
)
# Found before: JSON nested deeper than the stack was a 500.
@example(
    path="/longpolling/echo/x",
    method="POST",
    query="",
    body=b'{"a": ' + b"[" * 50_000,
    content_type="application/json",
    headers={},
)
def test_any_long_polling_request_is_answered_below_500(
    lp_router, path, method, query, body, content_type, headers
):
    env = environ(
        method,
        path,
        body=body,
        query=query,
        headers={"Content-Type": content_type, **headers},
    )
    assert_answered(*call(lp_router, env))


@FUZZ
@given(
    pairs=st.lists(
        st.tuples(st.text(max_size=10), json_values),
        max_size=4,
        unique_by=lambda p: p[0],
    )
)
def test_parameters_reach_the_handler_as_sent(lp_router, pairs):
    """JSON parameters the handler takes (all, with ``**params``) arrive
    unchanged, or the request is refused because a name clashes."""
    body = json.dumps(dict(pairs)).encode()
    env = environ(
        "POST",
        "/longpolling/echo/x",
        body=body,
        headers={"Content-Type": "application/json"},
    )
    status, _, answer = call(lp_router, env)
    names = {name for name, _ in pairs}
    if names & {"word", "request"}:
        assert status == HTTPStatus.BAD_REQUEST
    else:
        assert status == HTTPStatus.OK, answer
        assert json.loads(answer)["params"] == json.loads(body)


@FUZZ
@given(
    value=st.one_of(json_values, wsgi_text),
    wanted=st.sampled_from(lp.SCALARS),
    optional=st.booleans(),
)
def test_a_parameter_is_of_its_annotated_type_or_400(value, wanted, optional):
    try:
        converted = lp.convert("p", value, lp.ParameterType(wanted, optional))
    except HTTPError as exc:
        assert exc.status == HTTPStatus.BAD_REQUEST
        assert exc.reason.startswith("parameter 'p' must be ")
        return
    if converted is None:
        assert optional and value is None
    else:
        assert type(converted) is wanted


# --- routing


@FUZZ
@given(
    content_length=st.one_of(wsgi_text, st.integers(-5, 10**30).map(str)),
    body=st.binary(max_size=300),
    limit=st.integers(0, 200),
)
def test_a_body_is_read_or_refused_with_4xx(content_length, body, limit):
    request = Request(environ(body=body, content_length=content_length))
    try:
        read = request.body(limit)
    except HTTPError as exc:
        assert exc.status in (
            HTTPStatus.BAD_REQUEST,
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
        return
    assert len(read) <= limit
    assert body.startswith(read)


def ok(request: Request) -> Response:
    return Response.json(dict(request.path_args))


@FUZZ
@given(
    path=st.one_of(wsgi_text, st.builds(lambda tail: "/x/" + tail, wsgi_text)),
    method=wsgi_text,
)
def test_any_path_and_method_is_routed_or_refused(path, method):
    router = Router(
        [
            Route("/x/<int:n>", ok),
            Route("/x/<name>/y", ok, frozenset({"POST"})),
            Route("/files/<path:rest>", ok),
        ]
    )
    status, headers, _ = call(router, environ(method or "GET", path or "/"))
    assert status in (200, 404, 405)
    if status == 405:
        assert headers["Allow"]
