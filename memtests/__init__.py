"""Soak-scale memory tests (RSS of a real twistd under load): ``make memory``, not ``make test``."""
