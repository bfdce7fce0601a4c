"""A private nginx running the shipped template (templates/nginx.conf.in),
rendered with the values a test gives: its own port and directory, the
upstreams the test started. The appliance's nginx is never touched.
"""

from __future__ import annotations

import configparser
import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from .appliance import ROOT
from .tryton import free_port


def render_value(key: str) -> str:
    """The value of ``section:option`` in appliance.cfg."""
    defaults = configparser.ConfigParser(interpolation=None)
    defaults.read(ROOT / "appliance.cfg")
    section, _, option = key.partition(":")
    return defaults[section][option]


def render(template: Path, values: Mapping[str, str]) -> str:
    """*template* with each ``${section:option}`` replaced from *values*
    (keys ``section:option``), else from appliance.cfg."""
    return re.sub(
        r"\$\{([^}]+)\}",
        lambda match: values.get(match.group(1)) or render_value(match.group(1)),
        template.read_text(),
    )


def socketio_workers(port: int, workers: str = "1", remote: str = "") -> dict[str, str]:
    """The options the buildout's part ``[socketio-workers]`` computes
    (support/appliance_workers.py), as ``socketio-workers:<option>`` keys
    for a test that renders a template itself: *workers* local workers
    from *port* upward, and the *remote* ones (``NAME HOST:PORT`` lines)."""
    import appliance_workers  # support/, on bin/test's path

    options = {
        "workers": workers,
        "remote": remote,
        "port": str(port),
        "server-options": "max_fails=1 fail_timeout=5s",
        "program": "command = oe_web_socketio --worker {name} --port {port}",
    }
    appliance_workers.render(options)
    return {f"socketio-workers:{key}": value for key, value in options.items()}


@contextlib.contextmanager
def private_nginx(directory: Path, values: Mapping[str, str]) -> Iterator[str]:
    """Run the template's nginx in *directory* (its ``var/`` made here;
    ``buildout:directory``) on a free port, with *values* (``ports:trytond``,
    ``ports:socketio``…; without ``socketio-workers:*`` values, one
    real-time worker on ``ports:socketio``, see :func:`socketio_workers`);
    yield its URL, stop it (by PID) after. It listens
    on 127.0.0.1 only, and serves the checkout's ``node_modules`` (the
    Admin UI's files) and demo page."""
    for path in ("var/run", "var/log", "var/nginx"):
        (directory / path).mkdir(parents=True, exist_ok=True)
    port = free_port()
    if "socketio-workers:nginx-map" not in values:
        values = {**socketio_workers(int(values["ports:socketio"])), **values}
    text = render(
        ROOT / "templates" / "nginx.conf.in",
        {"buildout:directory": str(directory), "ports:http": str(port), **values},
    )
    text = re.sub(r"^\s*listen \[::\]:\d+;\n", "", text, flags=re.MULTILINE)
    # Files it serves from the checkout: nginx's workers (nobody) cannot
    # read under pytest's private temporary directory.
    for path in ("node_modules", "examples"):
        text = text.replace(f"{directory}/{path}/", f"{ROOT}/{path}/")
    config = directory / "nginx.conf"
    config.write_text(text)
    process = subprocess.Popen(
        [
            render_value("nginx:executable"),
            "-p",
            str(directory),
            "-c",
            str(config),
            "-g",
            "daemon off;",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"nginx did not start: {process.stderr.read().decode()}")
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        process.stderr.close()
