"""A handler's parameters: the pairs of a query string or form, and their
conversion to the scalar types a handler annotates (see :func:`convert`).

Invariant: whatever a client sends, a parameter is refused with an
:class:`~oe_web_socketio.exceptions.HTTPError` ``400`` naming it, never an
exception of another kind.
"""

from __future__ import annotations

import dataclasses
import math
import typing
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from oe_web_socketio.exceptions import HTTPError

#: The annotations of a handler's parameters that their values are
#: converted to (from the text of a query string or form) or checked
#: against (a JSON value).
SCALARS = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class ParameterType:
    """What a handler's parameter takes: a scalar type, maybe ``None``."""

    type: type
    optional: bool = False


def parameter_types(function: Callable[..., Any]) -> dict[str, ParameterType]:
    """The parameters of *function* annotated with a scalar type
    (:data:`SCALARS`), or one ``| None``, by name; other annotations
    (none, ``Any``, lists, classes) are left alone."""
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError, AttributeError, SyntaxError):
        return {}  # annotations that do not resolve: the handler's business
    types = {}
    for name, hint in hints.items():
        args = typing.get_args(hint)
        rest = [arg for arg in args if arg is not type(None)]
        optional = len(rest) < len(args)
        scalar = rest[0] if optional and len(rest) == 1 else hint
        if scalar in SCALARS and name != "return":
            types[name] = ParameterType(scalar, optional)
    return types


#: The words a query string says true or false with.
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
BOOLEANS.update({"0": False, "false": False, "no": False, "off": False, "": False})


def convert(name: str, value: Any, kind: ParameterType) -> Any:
    """*value* of the parameter *name* as its handler's annotation *kind*
    says: text (query string, form) is converted, a JSON value must be of
    the type already (an integer is a float too).

    :raises HTTPError: ``400`` naming the parameter and the type.
    """
    wanted = kind.type
    if value is None and kind.optional:
        return None
    if isinstance(value, str) and wanted is not str:
        text = value.strip()
        try:
            if wanted is bool:
                return BOOLEANS[text.lower()]
            if wanted is int and text.lstrip("+-").isdigit() and len(text) <= 30:
                return int(text)
            if wanted is float and len(text) <= 50:
                number = float(text)
                if math.isfinite(number):
                    return number
        except (KeyError, ValueError):
            pass
    elif isinstance(value, wanted) and not (wanted is int and isinstance(value, bool)):
        return value
    elif wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    words = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    raise HTTPError(
        HTTPStatus.BAD_REQUEST,
        f"parameter {shorten(name)!r} must be {words[wanted]}",
    )


def form_pairs(text: str) -> list[tuple[str, str]]:
    """The pairs of a query string or form body (WSGI strings are Latin-1
    for the bytes received; names and values are UTF-8, raw or
    percent-encoded).

    :raises HTTPError: ``400`` for what is not UTF-8.
    """
    try:
        text = text.encode("latin-1").decode("utf-8")
        return urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise HTTPError(HTTPStatus.BAD_REQUEST, "parameters are not UTF-8") from None


def shorten(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
