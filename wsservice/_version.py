"""The wsservice release version."""

__version__ = "0.1.0"

# what the server calls itself in HTTP responses and welcome messages
SERVER_NAME = f"wsservice/{__version__}"
