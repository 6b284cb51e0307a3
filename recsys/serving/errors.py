"""Errors of the online path, each mapped to one HTTP status by the API layer.

Bad request content is a plain `DataError` (422 over HTTP, naming the field in `column`); the two
classes here exist because callers must tell them apart from bad input: an unknown item is a
404, and a service that has not loaded its models yet is a 503 that a load balancer retries.
"""

from __future__ import annotations

from recsys.errors import DataError, RecsysError


class UnknownItemError(DataError):
    """The item is not in the served index (404 over HTTP)."""


class NotReadyError(RecsysError):
    """Nothing is loaded yet (no index published, models still loading): retry later (503)."""
