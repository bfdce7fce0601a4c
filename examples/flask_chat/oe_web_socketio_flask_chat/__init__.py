"""The chat with rooms in a Flask application (see :mod:`.app`)."""
