"""The exceptions the client raises.

Hierarchy::

    BanditClientError                  base of everything below
    ├── RequestError                   the service refused the request (a 4xx): a bug or a
    │   │                              misconfiguration to fix, so never hidden by a fallback
    │   ├── InvalidRequest       400, 413, 422, or a malformed id or event refused before sending
    │   ├── AuthError            401, 403: missing, unknown or under-scoped API key
    │   ├── NotFound             404: unknown or archived experiment
    │   └── Conflict             409
    ├── Unavailable                    no usable answer in time (timeout, connection refused,
    │                                  5xx, circuit open); a decision raises it only when no
    │                                  fallback was given
    ├── BufferFull                     ``reward()`` while the reward buffer is full
    └── ClientClosed                   any call after ``close()``

Lower-level errors (urllib3, aiohttp, the server's validation) are translated into these at the
boundary with ``raise ... from``.
"""

from __future__ import annotations


class BanditClientError(Exception):
    """Base of every error the client raises."""


class RequestError(BanditClientError):
    """The service answered, and refused the request: retrying it unchanged cannot help.

    ``status`` is the HTTP status, or None when the client refused the request before sending
    it (a malformed experiment id or reward event); ``code`` is the service's machine code.
    """

    def __init__(self, message: str, *, status: int | None = None,
                 code: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class InvalidRequest(RequestError):
    """400, 413 or 422: the request is malformed, too large or has impossible values."""


class AuthError(RequestError):
    """401 or 403: no valid API key, or the key lacks the scope."""


class NotFound(RequestError):
    """404: unknown (or archived) experiment."""


class Conflict(RequestError):
    """409: the request conflicts with the current state."""


class Unavailable(BanditClientError):
    """The service gave no usable answer in time, and there was no fallback to return."""


class BufferFull(BanditClientError):
    """The reward buffer holds ``max_buffer`` undelivered events; this one was not taken."""


class ClientClosed(BanditClientError):
    """The client was closed; it takes no more decisions or rewards."""


_BY_STATUS: dict[int, type[RequestError]] = {
    400: InvalidRequest, 401: AuthError, 403: AuthError, 404: NotFound, 409: Conflict,
    413: InvalidRequest, 422: InvalidRequest,
}


def request_error(status: int, code: str, message: str) -> RequestError:
    """The exception for a refused request with this HTTP status."""
    return _BY_STATUS.get(status, RequestError)(message, status=status, code=code)
