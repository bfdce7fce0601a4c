"""Start one of the example chats for tests/test_wsgi_hosts.py.

    python tests/wsgi_hosts_server.py {wsgi|webpy|flask} PORT

The example runs as its ``main()`` does (its framework, its settings, on
gevent), with an authenticate callable that is the example's, except for
two tokens a real application would not have: ``raise-token`` makes it
raise, ``garbage-token`` makes it return what is not a user.
"""

import resource
import sys

from oe_web_socketio.patch import patch

# The soft limit of open files a service manager leaves a process by
# default (systemd: 1024), which the middleware raises to the hard one
# (tests/test_wsgi_hosts.py checks).
_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
if _hard == resource.RLIM_INFINITY or _hard > 1024:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, _hard))

# Before web.py, whose request context must be greenlet-local.
patch()

from oe_web_socketio_wsgi_chat import chat  # noqa: E402


def authenticate(environ, auth):
    token = chat.token_of(environ, auth)
    if token == "raise-token":
        raise RuntimeError("the user store is down")
    if token == "garbage-token":
        return 42
    return chat.authenticate(environ, auth)


def main() -> None:
    framework, port = sys.argv[1:3]
    if framework == "wsgi":
        from oe_web_socketio_wsgi_chat.app import main as run
    elif framework == "webpy":
        from oe_web_socketio_webpy_chat import main as run
    elif framework == "flask":
        from oe_web_socketio_flask_chat.app import main as run
    else:
        sys.exit(f"unknown framework {framework!r}")
    run(["--port", port], authenticate)


if __name__ == "__main__":
    main()
