"""The one application error type.

Services raise ``ApplicationError`` (or a subclass) with a message a user can read; views, API views,
management commands and the proxy map it to their own output in one place each.
"""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    status_code = 400

    def __init__(self, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class NotFound(ApplicationError):
    """The object does not exist, or it exists in a workspace the caller cannot see."""

    status_code = 404


class PermissionDenied(ApplicationError):
    status_code = 403
