"""Run the server with ``python -m oe_web_socketio``."""

import sys

from oe_web_socketio.cli import main

if __name__ == "__main__":
    sys.exit(main())
