"""Long-polling routes: declaration, loading, the HTTP protocol, waiting.

These tests call the routes' WSGI router in process. Sessions are checked
by :class:`KeyAuthenticator` (a key table, no database) and transactions
are those of :class:`RecordingORM`, which records when a transaction is
opened and ended: they test what :mod:`oe_web_socketio.longpolling` does
with the Tryton host's sessions (:class:`TrytonSessions`: the session
header and cookie, ``X-Tryton-Database``) and an ORM, not with
``ir_session`` and trytond. Tryton's sessions and
models behind these routes are exercised for real in tests/test_longpolling.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import pytest
from oe_web_socketio import longpolling as lp
from oe_web_socketio.auth import Credentials, Identity
from oe_web_socketio.config import Config
from oe_web_socketio.exceptions import (
    AuthenticationError,
    ConfigError,
    DatabaseUnavailable,
    PoolTimeout,
)
from oe_web_socketio.hosts.tryton import TrytonSessions
from oe_web_socketio.routing import HTTPError, Response, Router

GOOD_KEY = "k" * 64


class KeyAuthenticator:
    """Accepts the key :data:`GOOD_KEY` for any user; ``down`` as key makes
    the database unavailable."""

    def __init__(self) -> None:
        self.calls: list[tuple[Credentials, str | None]] = []

    def authenticate(self, credentials: Credentials, address: str | None) -> Identity:
        self.calls.append((credentials, address))
        if credentials.key == "down":
            raise DatabaseUnavailable(credentials.database or "oe", "test: down")
        if credentials.key != GOOD_KEY:
            raise AuthenticationError("invalid or expired session")
        return Identity(
            db=credentials.database or "oe",
            uid=credentials.uid,
            login=credentials.login,
        )


class RecordingORM:
    """Transactions that only record their life: ``begin``/``end``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.open = 0
        self.fail: BaseException | None = None

    @contextlib.contextmanager
    def transaction(
        self,
        database: str,
        uid: int,
        *,
        request: dict | None = None,
        statement_timeout: int | None = None,
    ) -> Iterator[Any]:
        if self.fail is not None:
            raise self.fail
        self.open += 1
        self.events.append(("begin", (database, uid, request, statement_timeout)))
        transaction = types.SimpleNamespace(
            context={"language": "fr", "_check_access": True},
            connection=types.SimpleNamespace(cursor=lambda: "cursor"),
        )
        try:
            yield transaction
        finally:
            self.open -= 1
            self.events.append(("end", database))

    def models(self, database: str) -> dict[str, str]:
        return {"res.user": f"res.user of {database}"}


def session_header(login: str = "admin", uid: int = 1, key: str = GOOD_KEY) -> str:
    return "Session " + base64.b64encode(f"{login}:{uid}:{key}".encode()).decode()


def call(
    router: Router,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    content_type: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Call *router* as a WSGI server would; return status, headers, body."""
    import io

    answer: dict[str, Any] = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["headers"] = dict(response_headers)

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "CONTENT_TYPE": content_type,
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": "127.0.0.1",
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    data = b"".join(router(environ, start_response))
    return answer["status"], answer["headers"], data


def serve(
    registry: lp.LongPolling,
    *,
    timeout: float = 5.0,
    orm: Any = None,
    authenticator: Any = None,
    databases: tuple[str, ...] = ("oe", "other"),
    max_body: int = 1000,
) -> Router:
    router = Router()
    settings = lp.Settings(
        prefix="/longpolling",
        timeout=timeout,
        databases=databases,
        trusted_proxies=("127.0.0.1",),
        max_body=max_body,
        orm=orm,
        host=TrytonSessions(
            authenticator if authenticator is not None else KeyAuthenticator()
        ),
    )
    lp.add_routes(router, lp.endpoints(registry.routes, settings))
    return router


# -- declaration ------------------------------------------------------------


def test_route_records_its_arguments_and_returns_the_function():
    registry = lp.LongPolling()

    def handler(request, var1, var2):
        return None

    decorated = registry.route(
        "/varroute/<var1>/<var2>", mode="http", mustbeauthenticated=False
    )(handler)
    assert decorated is handler
    (spec,) = registry.routes
    assert (spec.path, spec.mode, spec.mustbeauthenticated, spec.function) == (
        "/varroute/<var1>/<var2>",
        "http",
        False,
        handler,
    )


def test_defaults_are_root_path_json_and_authenticated():
    registry = lp.LongPolling()

    @registry.route()
    def handler(request):
        return None

    (spec,) = registry.routes
    assert (spec.path, spec.mode, spec.mustbeauthenticated) == ("/", "json", True)


def test_stacked_routes_serve_one_function_at_several_paths():
    registry = lp.LongPolling()

    @registry.route("/mainroute")
    @registry.route("/varroute/<var1>/<var2>")
    def handler(request, var1=None, var2=None):
        return [var1, var2]

    assert [spec.path for spec in registry.routes] == [
        "/varroute/<var1>/<var2>",
        "/mainroute",
    ]
    router = serve(registry)
    auth = {"Authorization": session_header()}
    assert (
        call(router, "GET", "/longpolling/mainroute", headers=auth)[2] == b"[null,null]"
    )
    assert (
        call(router, "GET", "/longpolling/varroute/a/b", headers=auth)[2]
        == b'["a","b"]'
    )


@pytest.mark.parametrize(
    ("kwargs", "argument", "words"),
    [
        ({"path": "mainroute"}, "path", "starting with '/'"),
        ({"path": None}, "path", "starting with '/'"),
        ({"path": 42}, "path", "starting with '/'"),
        ({"path": "/a?b=1"}, "path", "query"),
        ({"path": "/a/<b"}, "path", "not a valid rule"),
        ({"path": "/a", "mode": "xml"}, "mode", "'json' or 'http'"),
        ({"path": "/a", "mode": None}, "mode", "'json' or 'http'"),
        (
            {"path": "/a", "mustbeauthenticated": "yes"},
            "mustbeauthenticated",
            "True or False",
        ),
        (
            {"path": "/a", "mustbeauthenticated": 1},
            "mustbeauthenticated",
            "True or False",
        ),
    ],
)
def test_wrong_arguments_fail_at_declaration_naming_route_and_argument(
    kwargs, argument, words
):
    registry = lp.LongPolling()
    with pytest.raises(lp.RouteError) as info:
        registry.route(**kwargs)
    assert info.value.argument == argument
    message = str(info.value)
    assert f"argument {argument!r}" in message
    assert words in message
    shown = kwargs["path"] if isinstance(kwargs["path"], str) else repr(kwargs["path"])
    assert shown in message
    assert registry.routes == ()


def test_a_handler_that_cannot_take_the_placeholders_is_refused():
    registry = lp.LongPolling()

    def handler(request, var1):
        return None

    with pytest.raises(
        lp.RouteError,
        match=r"handler cannot take the request and the placeholders var1, var2",
    ):
        registry.route("/varroute/<var1>/<var2>")(handler)
    assert registry.routes == ()


def test_request_cannot_be_a_placeholder():
    registry = lp.LongPolling()
    with pytest.raises(lp.RouteError, match="'request' cannot be a placeholder"):
        registry.route("/x/<request>")(lambda request, **kw: None)


def test_a_path_declared_twice_names_both_functions():
    registry = lp.LongPolling()

    @registry.route("/a")
    def first(request):
        return None

    def second(request):
        return None

    with pytest.raises(lp.RouteError, match="declared twice, by first and second"):
        registry.route("/a")(second)
    # The same declaration again (a module imported twice) is harmless.
    registry.route("/a")(first)
    assert len(registry.routes) == 1


def test_each_rule_is_logged_at_start(caplog):
    registry = lp.LongPolling()

    @registry.route("/varroute/<var1>/<var2>")
    def myfunction(request, var1, var2):
        return None

    caplog.clear()

    with caplog.at_level(logging.INFO, logger="oe_web_socketio.longpolling"):
        serve(registry)
    assert (
        "Add the rule: 'myfunction:/longpolling/varroute/<var1>/<var2>'"
        in caplog.messages
    )


# -- loading ----------------------------------------------------------------


def test_load_routes_imports_modules_that_declare_on_the_registry(
    tmp_path, monkeypatch
):
    registry = lp.LongPolling()
    module = tmp_path / "lp_declaring_module.py"
    module.write_text(
        textwrap.dedent(
            """
            from test_longpolling_registry import registry

            @registry.route("/declared")
            def declared(request):
                return "ok"
            """
        )
    )
    holder = types.ModuleType("test_longpolling_registry")
    holder.registry = registry
    monkeypatch.setitem(sys.modules, "test_longpolling_registry", holder)
    monkeypatch.syspath_prepend(str(tmp_path))
    specs = lp.load_routes(
        ["lp_declaring_module"], entry_points=False, registry=registry
    )
    assert [spec.path for spec in specs] == ["/declared"]


def test_a_module_that_cannot_be_imported_is_a_route_error():
    with pytest.raises(
        lp.RouteError,
        match="cannot import the long-polling routes of 'no_such_module_for_routes'",
    ):
        lp.load_routes(
            ["no_such_module_for_routes"], entry_points=False, registry=lp.LongPolling()
        )


def test_an_unknown_entry_point_group_loads_nothing():
    registry = lp.LongPolling()
    assert (
        lp.load_routes(group="oe_web_socketio.no_such_group", registry=registry) == []
    )


def test_a_path_taken_by_another_route_is_refused():
    registry = lp.LongPolling()

    @registry.route("/health")
    def health(request):
        return None

    router = Router()
    settings = lp.Settings(prefix="", timeout=1, databases=("oe",))
    lp.add_routes(router, lp.endpoints(registry.routes, settings))
    with pytest.raises(ValueError, match="already routed"):
        lp.add_routes(router, lp.endpoints(registry.routes, settings))


# -- configuration ------------------------------------------------------------


def test_config_defaults():
    config = Config()
    assert (
        config.longpolling_path,
        config.longpolling_timeout,
        config.longpolling_modules,
    ) == (
        "/longpolling",
        60.0,
        (),
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("longpolling_path", "longpolling"),
        ("longpolling_path", "/longpolling/"),
        ("longpolling_path", "/"),
        ("longpolling_path", "/a//b"),
        ("longpolling_path", "/a/<b>"),
        ("longpolling_path", "/socket.io"),
        ("longpolling_path", "/health"),
        ("longpolling_timeout", 0),
        ("longpolling_timeout", -1.0),
        ("longpolling_modules", ("not a module",)),
        ("longpolling_modules", ("a..b",)),
    ],
)
def test_config_refuses_bad_values_naming_the_key(key, value):
    with pytest.raises(ConfigError) as info:
        Config(**{key: value})
    assert info.value.key == key


def test_config_file_reads_the_keys(tmp_path):
    path = tmp_path / "oe.conf"
    path.write_text(
        "[oe_web_socketio]\nlongpolling_path = /lp\nlongpolling_timeout = 2.5\n"
        "longpolling_modules = a.b, c\n"
    )
    config = Config.from_file(str(path))
    assert (
        config.longpolling_path,
        config.longpolling_timeout,
        config.longpolling_modules,
    ) == (
        "/lp",
        2.5,
        ("a.b", "c"),
    )


# -- the protocol -------------------------------------------------------------


@pytest.fixture
def registry() -> lp.LongPolling:
    registry = lp.LongPolling()

    @registry.route("/echo/<word>", mustbeauthenticated=False)
    def echo(request, word, **params):
        return {
            "word": word,
            "params": params,
            "uid": request.uid,
            "login": request.login,
            "database": request.database,
            "context": request.context,
        }

    @registry.route("/text", mode="http", mustbeauthenticated=False)
    def text(request, kind="str"):
        return {
            "str": "héllo",
            "bytes": b"\x00\x01",
            "none": None,
            "response": Response(
                lp.HTTPStatus.ACCEPTED, b"<p>", content_type="text/html"
            ),
            "list": [1],
        }[kind]

    @registry.route("/private")
    def private(request):
        return {"uid": request.uid, "login": request.login, "context": request.context}

    @registry.route("/strict", mustbeauthenticated=False)
    def strict(request, number):
        return number

    @registry.route("/typed/<int:number>", mustbeauthenticated=False)
    def typed(
        request,
        number: int,
        count: int = 1,
        ratio: float | None = None,
        flag: bool = False,
        name: str = "",
        anything: Any = None,
    ):
        return [number, count, ratio, flag, name, anything]

    @registry.route("/model", mustbeauthenticated=False)
    def model(request):
        return request.model("res.user")

    @registry.route("/boom")
    def boom(request):
        request.model("res.user")
        raise ZeroDivisionError("boom")

    @registry.route("/refuse", mustbeauthenticated=False)
    def refuse(request):
        raise HTTPError(lp.HTTPStatus.CONFLICT, "not now")

    return registry


AUTH = {"Authorization": session_header("ann", 7)}


def test_json_route_gets_path_and_query_parameters(registry):
    status, headers, body = call(
        serve(registry), "GET", "/longpolling/echo/hi", query="a=1&b=%C3%A9&empty="
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert json.loads(body) == {
        "word": "hi",
        "params": {"a": "1", "b": "é", "empty": ""},
        "uid": None,
        "login": None,
        "database": "oe",
        "context": {},
    }


def test_post_json_body_gives_typed_parameters(registry):
    status, _, body = call(
        serve(registry),
        "POST",
        "/longpolling/echo/hi",
        query="q=1",
        body=json.dumps({"n": 3, "l": [1, None], "o": {"x": True}}).encode(),
        content_type="application/json; charset=utf-8",
    )
    assert status == 200
    assert json.loads(body)["params"] == {
        "q": "1",
        "n": 3,
        "l": [1, None],
        "o": {"x": True},
    }


def test_post_form_body_gives_parameters(registry):
    status, _, body = call(
        serve(registry),
        "POST",
        "/longpolling/echo/hi",
        body=b"x=1&y=%E2%82%AC",
        content_type="application/x-www-form-urlencoded",
    )
    assert status == 200
    assert json.loads(body)["params"] == {"x": "1", "y": "€"}


def test_authenticated_request_has_uid_login_and_names_its_database(registry):
    authenticator = KeyAuthenticator()
    router = serve(registry, authenticator=authenticator)
    status, _, body = call(
        router,
        "GET",
        "/longpolling/echo/hi",
        headers={**AUTH, "X-Tryton-Database": "other", "X-Forwarded-For": "10.1.2.3"},
    )
    assert status == 200
    data = json.loads(body)
    assert (data["uid"], data["login"], data["database"]) == (7, "ann", "other")
    ((credentials, address),) = authenticator.calls
    assert (credentials.database, address) == ("other", "10.1.2.3")


def test_the_tryton_session_cookie_authenticates_too(registry):
    status, _, body = call(
        serve(registry),
        "GET",
        "/longpolling/private",
        headers={"Cookie": f"other=1; tryton_session=bob:9:{GOOD_KEY}"},
    )
    assert status == 200
    assert json.loads(body)["uid"] == 9


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": session_header(key="wrong")},
        {"Authorization": "Session %%%not-base64"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
    ],
)
def test_unauthenticated_requests_are_refused_with_401(registry, headers, caplog):
    caplog.clear()
    with caplog.at_level(logging.INFO):
        status, response_headers, body = call(
            serve(registry), "GET", "/longpolling/private", headers=headers
        )
    assert status == 401
    assert response_headers["WWW-Authenticate"] == "Session"
    assert "error" in json.loads(body)


def test_a_refused_session_is_refused_on_a_public_route_too(registry):
    status, _, _ = call(
        serve(registry),
        "GET",
        "/longpolling/echo/x",
        headers={"Authorization": session_header(key="wrong")},
    )
    assert status == 401


def test_a_server_without_authenticator_refuses_sessions(registry):
    router = Router()
    settings = lp.Settings(prefix="/longpolling", timeout=1, databases=("oe",))
    lp.add_routes(router, lp.endpoints(registry.routes, settings))
    assert call(router, "GET", "/longpolling/echo/x", headers=AUTH)[0] == 401
    assert call(router, "GET", "/longpolling/echo/x")[0] == 200


def test_an_anonymous_request_naming_an_unknown_database_is_refused(registry):
    status, _, body = call(
        serve(registry),
        "GET",
        "/longpolling/echo/x",
        headers={"X-Tryton-Database": "nope"},
    )
    assert (status, json.loads(body)) == (400, {"error": "unknown database 'nope'"})


def test_database_unavailable_while_authenticating_is_503_with_retry_after(
    registry, caplog
):
    router = serve(registry)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="oe_web_socketio"):
        status, headers, _ = call(
            router,
            "GET",
            "/longpolling/private",
            headers={"Authorization": session_header(key="down")},
        )
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert len(caplog.records) == 1


def test_listening_without_a_database_bridge_is_503(caplog):
    # Routes served without a server's broker (pubsub.NULL, the default)
    # have nothing to listen to: 503 (a WSGI host's: test_pubsub_local.py).
    registry = lp.LongPolling()

    @registry.route("/listen", mustbeauthenticated=False)
    def listen(request):
        return request.listen("news", timeout=1.0)

    router = serve(registry)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="oe_web_socketio"):
        status, headers, _ = call(router, "GET", "/longpolling/listen")
    assert (status, headers["Retry-After"]) == (503, "5")
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "Cannot answer GET /longpolling/listen from 127.0.0.1: database 'oe' "
        "unavailable: this server has no database bridge"
    )


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/longpolling/nope", 404),
        ("GET", "/longpolling/echo", 404),
        ("GET", "/longpolling/echo/x/", 404),
        ("PUT", "/longpolling/echo/x", 405),
        ("DELETE", "/longpolling/echo/x", 405),
    ],
)
def test_unknown_route_404_wrong_method_405(registry, method, path, status):
    answer_status, headers, _ = call(serve(registry), method, path)
    assert answer_status == status
    if status == 405:
        # The router answers HEAD as GET without a body.
        assert headers["Allow"] == "GET, HEAD, POST"


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        (
            {"body": b"{not json", "content_type": "application/json"},
            400,
            "malformed JSON",
        ),
        (
            {"body": b"\xff\xfe", "content_type": "application/json"},
            400,
            "malformed JSON",
        ),
        (
            {"body": b"[1, 2]", "content_type": "application/json"},
            400,
            "must be an object",
        ),
        ({"body": b"<a/>", "content_type": "application/xml"}, 415, "application/json"),
        ({"body": b"x" * 2000, "content_type": "application/json"}, 413, "too large"),
        ({"query": "a=1&a=2"}, 400, "'a' given twice"),
        ({"query": "word=2"}, 400, "'word' given twice"),
        (
            {"query": "a=1", "body": b'{"a": 2}', "content_type": "application/json"},
            400,
            "'a' given twice (in the body)",
        ),
        ({"query": "a=%FF"}, 400, "not UTF-8"),
    ],
)
def test_bad_parameters_are_400_with_one_log_line(
    registry, caplog, kwargs, status, words
):
    router = serve(registry)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="oe_web_socketio"):
        answer_status, _, body = call(router, "POST", "/longpolling/echo/x", **kwargs)
    assert answer_status == status
    assert words in json.loads(body)["error"]
    assert len(caplog.records) == 1


@pytest.mark.parametrize(
    ("query", "body", "expected"),
    [
        ("", None, [4, 1, None, False, "", None]),
        (
            "count=-3&ratio=0.5&flag=true&name=7&anything=x",
            None,
            [4, -3, 0.5, True, "7", "x"],
        ),
        ("flag=0&ratio=1e3", None, [4, 1, 1000.0, False, "", None]),
        (
            "",
            {"count": 3, "ratio": 2, "flag": True, "name": "n", "anything": [1]},
            [4, 3, 2.0, True, "n", [1]],
        ),
        ("", {"ratio": None, "count": "5"}, [4, 5, None, False, "", None]),
    ],
)
def test_annotated_parameters_are_converted(registry, query, body, expected):
    kwargs = {} if body is None else {"body": json.dumps(body).encode()}
    status, _, answer = call(
        serve(registry),
        "POST",
        "/longpolling/typed/4",
        query=query,
        content_type="application/json",
        **kwargs,
    )
    assert (status, json.loads(answer)) == (200, expected)


@pytest.mark.parametrize(
    ("query", "body", "error"),
    [
        ("count=abc", None, "parameter 'count' must be an integer"),
        ("count=1.5", None, "parameter 'count' must be an integer"),
        ("count=" + "9" * 40, None, "parameter 'count' must be an integer"),
        ("ratio=nan", None, "parameter 'ratio' must be a number"),
        ("ratio=inf", None, "parameter 'ratio' must be a number"),
        ("flag=maybe", None, "parameter 'flag' must be a boolean"),
        ("", {"count": True}, "parameter 'count' must be an integer"),
        ("", {"count": None}, "parameter 'count' must be an integer"),
        ("", {"name": 5}, "parameter 'name' must be a string"),
        ("", {"flag": 1}, "parameter 'flag' must be a boolean"),
    ],
)
def test_parameters_of_the_wrong_type_are_400(registry, caplog, query, body, error):
    kwargs = {} if body is None else {"body": json.dumps(body).encode()}
    router = serve(registry)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="oe_web_socketio"):
        status, _, answer = call(
            router,
            "POST",
            "/longpolling/typed/4",
            query=query,
            content_type="application/json",
            **kwargs,
        )
    assert (status, json.loads(answer)) == (400, {"error": error})
    assert len(caplog.records) == 1


def test_json_nested_deeper_than_the_stack_is_400(registry, caplog):
    # json.loads raises RecursionError, which was answered 500.
    router = serve(registry, max_body=200_000)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="oe_web_socketio"):
        status, _, body = call(
            router,
            "POST",
            "/longpolling/echo/x",
            body=b'{"a": ' + b"[" * 100_000,
            content_type="application/json",
        )
    assert (status, json.loads(body)) == (400, {"error": "malformed JSON body"})
    assert len(caplog.records) == 1


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("", "missing a required argument: 'number'"),
        ("number=1&other=2", "unexpected keyword argument 'other'"),
        ("request=1", "multiple values for argument 'request'"),
    ],
)
def test_parameters_the_handler_does_not_take_are_400(registry, query, words):
    status, _, body = call(serve(registry), "GET", "/longpolling/strict", query=query)
    assert status == 400
    assert words in json.loads(body)["error"]


def test_a_handler_refusing_with_http_error_sets_the_status(registry):
    status, _, body = call(serve(registry), "GET", "/longpolling/refuse")
    assert (status, json.loads(body)) == (409, {"error": "not now"})


@pytest.mark.parametrize(
    ("kind", "status", "content_type", "body"),
    [
        ("str", 200, "text/plain; charset=utf-8", "héllo".encode()),
        ("bytes", 200, "application/octet-stream", b"\x00\x01"),
        ("none", 200, "text/plain; charset=utf-8", b""),
        ("response", 202, "text/html", b"<p>"),
    ],
)
def test_http_mode_answers(registry, kind, status, content_type, body):
    answer = call(serve(registry), "GET", "/longpolling/text", query=f"kind={kind}")
    assert (answer[0], answer[1]["Content-Type"], answer[2]) == (
        status,
        content_type,
        body,
    )


def test_http_mode_refuses_other_results_as_a_handler_fault(registry, caplog):
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        status, _, _ = call(
            serve(registry), "GET", "/longpolling/text", query="kind=list"
        )
    assert status == 500
    (record,) = caplog.records
    assert "returns str, bytes or a Response" in str(record.exc_info[1])


def test_a_json_result_that_is_not_json_is_a_handler_fault(caplog):
    registry = lp.LongPolling()

    @registry.route("/set", mustbeauthenticated=False)
    def not_json(request):
        return {1, 2}

    caplog.clear()

    with caplog.at_level(logging.ERROR):
        assert call(serve(registry), "GET", "/longpolling/set")[0] == 500
    assert len(caplog.records) == 1


# -- the models and their transaction ---------------------------------------


def test_model_needs_an_authenticated_user(registry, caplog):
    orm = RecordingORM()
    router = serve(registry, orm=orm)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="oe_web_socketio"):
        status, _, body = call(router, "GET", "/longpolling/model")
    assert (status, json.loads(body)) == (
        401,
        {"error": "the models need an authenticated user"},
    )
    assert orm.events == []
    assert len(caplog.records) == 1


def test_model_opens_one_transaction_as_the_user_and_it_ends(registry):
    orm = RecordingORM()
    status, _, body = call(
        serve(registry, orm=orm), "GET", "/longpolling/model", headers=AUTH
    )
    assert (status, json.loads(body)) == (200, "res.user of oe")
    assert [event for event, _ in orm.events] == ["begin", "end"]
    database, uid, request, statement_timeout = orm.events[0][1]
    assert (database, uid, statement_timeout) == ("oe", 7, 5)
    assert request["remote_addr"] == "127.0.0.1"
    assert orm.open == 0


def test_context_is_the_users_without_private_keys(registry):
    orm = RecordingORM()
    status, _, body = call(
        serve(registry, orm=orm), "GET", "/longpolling/private", headers=AUTH
    )
    assert status == 200
    assert json.loads(body) == {"uid": 7, "login": "ann", "context": {"language": "fr"}}
    assert orm.open == 0


def test_a_handler_that_raises_is_500_with_one_traceback_and_its_transaction_ends(
    registry, caplog
):
    orm = RecordingORM()
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        status, _, body = call(
            serve(registry, orm=orm), "GET", "/longpolling/boom", headers=AUTH
        )
    assert (status, json.loads(body)) == (500, {"error": "internal server error"})
    (record,) = caplog.records
    assert record.exc_info[0] is ZeroDivisionError
    assert [event for event, _ in orm.events] == ["begin", "end"]


@pytest.mark.parametrize(
    "fault", [PoolTimeout("oe", 0.5), DatabaseUnavailable("oe", "connection refused")]
)
def test_a_busy_or_unreachable_database_is_503_with_one_log_line(
    registry, caplog, fault
):
    orm = RecordingORM()
    orm.fail = fault
    router = serve(registry, orm=orm)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="oe_web_socketio"):
        status, headers, _ = call(router, "GET", "/longpolling/boom", headers=AUTH)
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert len(caplog.records) == 1
    assert "oe" in caplog.messages[0]


def test_without_orm_the_models_are_a_server_fault(registry, caplog):
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert call(serve(registry), "GET", "/longpolling/boom", headers=AUTH)[0] == 500
    assert "trytond_config" in str(caplog.records[0].exc_info[1])


def test_models_are_refused_in_another_greenlet():
    registry = lp.LongPolling()
    seen = []

    @registry.route("/elsewhere")
    def elsewhere(request):
        request.model("res.user")
        other = gevent.spawn(request.model, "res.user")
        other.join()
        seen.append(other.exception)
        return "ok"

    orm = RecordingORM()
    assert (
        call(serve(registry, orm=orm), "GET", "/longpolling/elsewhere", headers=AUTH)[0]
        == 200
    )
    assert isinstance(seen[0], RuntimeError)
    assert "handler's greenlet" in str(seen[0])


# -- waiting ---------------------------------------------------------------


def waiting_registry(orm_events: list | None = None) -> lp.LongPolling:
    registry = lp.LongPolling()
    events = {"event": gevent.event.Event(), "result": gevent.event.AsyncResult()}

    @registry.route("/wait/<kind>")
    def wait(request, kind, timeout=None):
        request.model("res.user")
        if orm_events is not None:
            orm_events.append(("waiting", None))
        if kind == "callable":
            return request.wait(lambda limit: {"limit_positive": limit > 0})
        if kind == "callable_timeout":

            def never(limit):
                raise TimeoutError

            return request.wait(never)
        if kind == "threading":
            return request.wait(threading.Event(), timeout=0.01)
        if kind == "nothing":
            return request.wait(object())
        waited = request.wait(
            events[kind], timeout=None if timeout is None else float(timeout)
        )
        request.model("res.user")
        return waited

    registry.events = events  # type: ignore[attr-defined]
    return registry


def test_wait_for_a_gevent_event_ends_the_transaction_first():
    events: list = []
    registry = waiting_registry(events)
    orm = RecordingORM()
    orm.events = events
    gevent.spawn_later(0.01, registry.events["event"].set)
    status, _, body = call(
        serve(registry, orm=orm), "GET", "/longpolling/wait/event", headers=AUTH
    )
    assert (status, json.loads(body)) == (200, True)
    # A transaction before the wait, ended when the wait began, and a new
    # one after it.
    assert [event for event, _ in events] == ["begin", "waiting", "end", "begin", "end"]


def test_wait_for_an_async_result_returns_its_value():
    registry = waiting_registry()
    gevent.spawn_later(0.01, registry.events["result"].set, {"news": 1})
    status, _, body = call(
        serve(registry, orm=RecordingORM()),
        "GET",
        "/longpolling/wait/result",
        headers=AUTH,
    )
    assert (status, json.loads(body)) == (200, {"news": 1})


def test_wait_for_a_callable_gets_the_time_left():
    registry = waiting_registry()
    status, _, body = call(
        serve(registry, orm=RecordingORM()),
        "GET",
        "/longpolling/wait/callable",
        headers=AUTH,
    )
    assert (status, json.loads(body)) == (200, {"limit_positive": True})


@pytest.mark.parametrize(
    ("kind", "query", "timeout"),
    [
        ("event", "", 0.05),
        ("event", "timeout=0.01", 5.0),
        ("result", "", 0.05),
        ("callable_timeout", "", 5.0),
        ("threading", "", 5.0),
    ],
)
def test_no_news_in_time_is_204_and_no_transaction_is_left(kind, query, timeout):
    orm = RecordingORM()
    router = serve(waiting_registry(), orm=orm, timeout=timeout)
    status, headers, body = call(
        router, "GET", f"/longpolling/wait/{kind}", query=query, headers=AUTH
    )
    assert (status, body) == (204, b"")
    assert headers["Cache-Control"] == "no-store"
    assert orm.open == 0


def test_waiting_for_what_cannot_be_waited_for_is_a_handler_fault(caplog):
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        status, _, _ = call(
            serve(waiting_registry(), orm=RecordingORM()),
            "GET",
            "/longpolling/wait/nothing",
            headers=AUTH,
        )
    assert status == 500
    assert isinstance(caplog.records[0].exc_info[1], TypeError)


def test_get_timeout_is_the_configured_one_inside_a_handler():
    registry = lp.LongPolling()

    @registry.route("/timeout", mustbeauthenticated=False)
    def timeout(request):
        return [lp.get_timeout(), request.get_timeout(), request.remaining() <= 7.5]

    assert json.loads(
        call(serve(registry, timeout=7.5), "GET", "/longpolling/timeout")[2]
    ) == [7.5, 7.5, True]
    with pytest.raises(RuntimeError, match="long-polling handlers"):
        lp.get_timeout()
