"""Long-polling routes as declared: the :data:`longpolling` registry,
:class:`LongPolling`, and the checks a declaration passes (see the package's
docstring for the protocol).

Invariant: a route that is registered was checked: its path is a valid
werkzeug rule without query or space, its mode one of :data:`MODES`, its
handler takes the request and the path's placeholders.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from werkzeug.routing import Map, Rule

from oe_web_socketio.exceptions import RouteError

#: The values of a route's ``mode``.
MODES = ("json", "http")

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class RouteSpec:
    """A route as declared: its path (without the prefix), handler, mode
    and whether it needs an authenticated user."""

    path: str
    function: Callable[..., Any]
    mode: str = "json"
    mustbeauthenticated: bool = True

    @property
    def name(self) -> str:
        return getattr(self.function, "__name__", repr(self.function))


class LongPolling:
    """A registry of long-polling routes, filled by :meth:`route`."""

    def __init__(self) -> None:
        self._routes: list[RouteSpec] = []

    @property
    def routes(self) -> tuple[RouteSpec, ...]:
        """The routes declared so far, in order."""
        return tuple(self._routes)

    def route(
        self, path: str = "/", mode: str = "json", mustbeauthenticated: bool = True
    ) -> Callable[[F], F]:
        """Declare the decorated function the handler of *path*.

        The function is called with a :class:`LongPollingRequest`, then the
        path's placeholders and the request's parameters as keyword
        arguments; it is returned unchanged, so decorators stack.

        :param path: the path under the prefix, starting with ``/``;
            werkzeug placeholders (``<name>``, ``<int:name>``) allowed.
        :param mode: ``"json"`` (the result is sent as JSON) or
            ``"http"`` (a :class:`str`, :class:`bytes` or
            :class:`~oe_web_socketio.routing.Response`).
        :param mustbeauthenticated: refuse requests without a valid session
            (``401``).
        :raises RouteError: an argument is wrong, the function does not
            accept the path's placeholders, or the path is declared twice.
        """
        check_route_arguments(path, mode, mustbeauthenticated)

        def decorator(function: F) -> F:
            spec = RouteSpec(path, function, mode, mustbeauthenticated)
            check_handler(spec)
            for existing in self._routes:
                if existing.path == path:
                    if existing == spec:
                        return function
                    raise RouteError(
                        path,
                        "path",
                        f"declared twice, by {existing.name} and {spec.name}",
                    )
            self._routes.append(spec)
            return function

        return decorator


#: The registry of :data:`ENTRY_POINT_GROUP` modules and of
#: ``longpolling_modules``.
longpolling = LongPolling()


def check_route_arguments(path: Any, mode: Any, mustbeauthenticated: Any) -> None:
    """Refuse wrong :meth:`LongPolling.route` arguments.

    :raises RouteError: naming the route and the argument.
    """
    shown = path if isinstance(path, str) else repr(path)
    if not isinstance(path, str) or not path.startswith("/"):
        raise RouteError(
            shown, "path", f"must be a string starting with '/', got {path!r}"
        )
    if any(char in path for char in "?# \t\r\n"):
        raise RouteError(path, "path", "must not hold a query, fragment or space")
    try:
        placeholders(path)
    except ValueError as exc:
        raise RouteError(path, "path", f"not a valid rule: {exc}") from None
    if mode not in MODES:
        raise RouteError(path, "mode", f"must be 'json' or 'http', got {mode!r}")
    if not isinstance(mustbeauthenticated, bool):
        raise RouteError(
            path,
            "mustbeauthenticated",
            f"must be True or False, got {mustbeauthenticated!r}",
        )


def placeholders(path: str) -> tuple[str, ...]:
    """The names of the placeholders of the werkzeug rule *path*.

    :raises ValueError: *path* is not a valid rule.
    """
    rule = Rule(path)
    Map([rule])  # compiles the rule
    return tuple(sorted(rule.arguments))


def check_handler(spec: RouteSpec) -> None:
    """Refuse a handler that cannot be called with a request and the
    path's placeholders.

    :raises RouteError: naming the route and the function.
    """
    if not callable(spec.function):
        raise RouteError(
            spec.path, None, f"the handler {spec.function!r} is not callable"
        )
    names = placeholders(spec.path)
    if "request" in names:
        raise RouteError(spec.path, "path", "'request' cannot be a placeholder")
    try:
        signature = inspect.signature(spec.function)
    except (TypeError, ValueError):
        return  # a builtin, say: checked at each call
    try:
        signature.bind_partial(None, **dict.fromkeys(names))
    except TypeError as exc:
        raise RouteError(
            spec.path,
            "path",
            f"{spec.name} cannot take the request and the placeholders "
            f"{', '.join(names) or '(none)'}: {exc}",
        ) from None
