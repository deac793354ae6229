"""The service's errors: one :class:`ServiceError` (``V0xx``), a :class:`~engine.errors.KlaviyoSyncError`.

Codes:

- ``V001`` another ``serve`` holds the hub (the lock file beside it names its pid).
- ``V002`` a non-loopback host without ``service.token``.
- ``V003`` the address cannot be bound (port in use, unknown host).
- ``V400`` the request body is not JSON (line and column given), or not the expected shape.
- ``V401`` no token, a wrong token, or the API is disabled because ``service.token`` is not set.
- ``V403`` a form without a valid CSRF token, or a state-changing page while no token is set.
- ``V404`` unknown route or record; ``V405`` method not allowed.
- ``V413`` the request body is larger than ``service.max_body_bytes``.
- ``V422`` the request is well-formed but cannot be carried out (e.g. nothing to retry).
"""

from __future__ import annotations

from engine.errors import KlaviyoSyncError


class ServiceError(KlaviyoSyncError):
    """A problem of the ``serve`` process or of one request to it.

    Attributes:
        status: the HTTP status the API answers with (requests only).
    """

    code = "V000"
    exit_code = 2

    def __init__(self, message: str, *, code: str | None = None, status: int = 400, **kw: object) -> None:
        super().__init__(message, code=code, **kw)  # type: ignore[arg-type]
        self.status = status


__all__ = ["ServiceError"]
