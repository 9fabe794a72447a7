"""mailboot: one container that turns a bare server and a domain into a working mail server."""

__version__ = "0.1.0"
