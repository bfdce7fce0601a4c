"""Driving long-polling routes from integration tests: the server process
with a configuration of the test's own (its HTTP requests go through
:func:`tests.realtime.http`; the TCP proxy that cuts PostgreSQL off is
:class:`tests.tcpproxy.TcpProxy`).

The server is the appliance's ``bin/oe_web_socketio`` (its eggs, the
example routes of its entry points) with a second ``-c`` file that
replaces the appliance's: the test database, a free port, the routes of
:mod:`tests.longpolling_routes`, and the pool sizes the test wants.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .appliance import ROOT
from .realtime import RealtimeServer, http
from .tryton import Session, free_port


class LongPollingServer(RealtimeServer):
    """``bin/oe_web_socketio -c <test conf>`` serving *database*: a
    :class:`~tests.realtime.RealtimeServer` with a configuration file of
    the test's own.

    :param settings: more ``[oe_web_socketio]`` keys (``max_cursor``…).
    :param trytond_config: trytond's configuration (default: the
        appliance's).
    """

    def __init__(
        self,
        workdir: Path,
        database: str,
        *,
        settings: Mapping[str, Any] | None = None,
        trytond_config: Path | None = None,
    ) -> None:
        port = free_port()
        self.config = workdir / f"oe_web_socketio-{port}.conf"
        log = workdir / f"oe_web_socketio-{port}.log"
        values = {
            "databases": database,
            "interface": "127.0.0.1",
            "port": port,
            "trytond_config": trytond_config or ROOT / "etc" / "trytond.conf",
            "trusted_proxies": "127.0.0.1, ::1",
            "longpolling_modules": "tests.longpolling_routes",
            # The appliance's: workers of one database agree on their broker.
            "broker": "postgresql",
            **(settings or {}),
        }
        self.config.write_text(
            "[oe_web_socketio]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        super().__init__(
            ROOT, database, log, args=("-c", str(self.config)), env=env, port=port
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def request(
        self,
        path: str,
        *,
        session: Session | None = None,
        method: str | None = None,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 90,
    ) -> tuple[int, dict[str, str], bytes]:
        """Call *path* (under ``/longpolling``); *params* go as a JSON body.

        :return: the status, headers and body, whatever the status.
        """
        return http(
            self.url + "/longpolling" + path,
            session=session,
            method=method,
            params=params,
            body=body,
            headers=headers,
            timeout=timeout,
        )

    def json(self, path: str, **kwargs: Any) -> Any:
        """The JSON answer of *path*, which must be ``200``."""
        status, _, body = self.request(path, **kwargs)
        assert status == 200, (status, body)
        return json.loads(body)
