"""``python -m wsservice.tokens``: mint an HMAC-signed bearer token for ``--auth hmac:FILE``.

The authenticator itself lives in ``hmactokens.py``: ``import wsservice`` must not import
this module, or ``python -m`` would find it already imported and warn (runpy).
"""

from __future__ import annotations

import argparse
import sys

from .errors import ConfigurationError
from .hmactokens import MAX_TOKEN_LENGTH, MIN_SECRET_BYTES, HMACAuthenticator

__all__ = ["HMACAuthenticator", "MAX_TOKEN_LENGTH", "MIN_SECRET_BYTES", "main"]


def main(argv: list[str] | None = None) -> int:
    """Mint a token: ``python -m wsservice.tokens --secret-file F --sub NAME [--ttl S]``."""
    parser = argparse.ArgumentParser(prog="python -m wsservice.tokens", description=main.__doc__)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--sub", required=True, help="the principal's name")
    parser.add_argument("--ttl", type=float, default=3600, help="seconds (default 3600)")
    args = parser.parse_args(argv)
    try:
        print(HMACAuthenticator.fromFile(args.secret_file).mint(args.sub, args.ttl))
    except ConfigurationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
