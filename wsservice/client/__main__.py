"""``python -m wsservice.client URL call METHOD [JSON] | publish TOPIC JSON | listen [TOPIC...]``
(see cli.py)."""

from .cli import main

if __name__ == "__main__":
    main()
