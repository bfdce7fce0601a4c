"""Tests of :mod:`oe_web_socketio.patch`.

Patching is process-wide, so it is tested in child processes: the test
process itself must stay unpatched.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        check=False,
        capture_output=True,
        text=True,
        timeout=50,
    )


def test_patch_is_idempotent_and_patches_socket_and_threading():
    result = run_python(
        """
        import socket, threading
        from oe_web_socketio.patch import patch
        patch()
        patch()
        import gevent.socket, gevent.threading
        from gevent import monkey
        assert socket.socket is gevent.socket.socket, socket.socket
        assert monkey.is_module_patched("threading")
        print("patched")
        """
    )
    assert result.stderr == ""
    assert result.stdout == "patched\n"


def test_importing_the_package_has_no_side_effect():
    result = run_python(
        """
        import sys
        import oe_web_socketio.cli, oe_web_socketio.config
        import oe_web_socketio.exceptions, oe_web_socketio.patch
        import oe_web_socketio.health, oe_web_socketio.routing
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("gevent", "socketio", "engineio"))
        print(loaded)
        """
    )
    assert result.stderr == ""
    assert result.stdout == "[]\n"
