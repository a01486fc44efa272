"""The wsservice release version."""

__version__ = "0.1.0"

# what the server calls itself in welcome messages (and, with --server-version, in HTTP
# Server headers)
SERVER_NAME = f"wsservice/{__version__}"
# the HTTP Server header by default: naming a version only helps an attacker pick exploits
SERVER_PRODUCT = "wsservice"


def server_header(with_version: bool) -> str:
    """The HTTP ``Server`` header's value: ``wsservice``, or ``wsservice/<version>``."""
    return SERVER_NAME if with_version else SERVER_PRODUCT
