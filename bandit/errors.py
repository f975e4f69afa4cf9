"""The exceptions the service raises, and the HTTP status each one maps to.

Hierarchy::

    BanditError                      base; carries an HTTP status and a short machine code
    ├── MalformedRequest       400   the body is not JSON, or not the shape the endpoint takes
    ├── Unauthorized           401   no valid API key
    ├── Forbidden              403   the key lacks the scope
    ├── NotFound               404   unknown experiment, arm or route
    ├── Conflict               409   id exists, or a stale configuration version
    ├── PayloadTooLarge        413   a body over the byte limit
    ├── UnsupportedMediaType   415   a body that is not application/json
    ├── InvalidValue           422   well-formed but impossible values
    └── StoreUnavailable       503   Redis cannot be reached for a write

Lower-level errors (redis-py, JSON decoding) are translated into these at the boundary with
``raise ... from``, so handlers and the endpoint wrapper (``bandit.app._endpoint``) only ever
see this hierarchy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class BanditError(Exception):
    """Base of every error the service reports to a client."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class MalformedRequest(BanditError):
    status = 400
    code = "malformed"


class Unauthorized(BanditError):
    status = 401
    code = "unauthorized"


class Forbidden(BanditError):
    status = 403
    code = "forbidden"


class NotFound(BanditError):
    status = 404
    code = "not_found"


class Conflict(BanditError):
    status = 409
    code = "conflict"


def stale(what: str, current: int, based_on: int) -> Conflict:
    """The 409 of a change based on a version that is no longer the current one (``what``:
    ``experiment 'x'``, ``layer 'y'``)."""
    return Conflict(f"{what} is at version {current}, not {based_on}: reload it and apply "
                    "your change again")


class PayloadTooLarge(BanditError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(BanditError):
    status = 415
    code = "unsupported_media_type"


class InvalidValue(BanditError):
    status = 422
    code = "invalid"


class StoreUnavailable(BanditError):
    status = 503
    code = "store_unavailable"


def json_kind(value: object) -> str:
    """How a JSON value is named in a message (never its whole text: it may be huge)."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def object_fields(value: object, what: str, allowed: set[str],
                  describe: Callable[[object], str] = json_kind) -> dict[str, Any]:
    """``value`` as a JSON object whose fields are all in ``allowed``; InvalidValue naming
    ``what`` (and ``describe(value)`` when it is not an object) otherwise."""
    if not isinstance(value, dict):
        raise InvalidValue(f"{what}: expected an object, got {describe(value)}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidValue(f"{what}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    return value
