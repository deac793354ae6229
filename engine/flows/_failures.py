"""Failures that are not the record's: refused credentials, and exceptions nobody planned for.

Both directions share two rules:

* **401 / 403** (and an OAuth connection that cannot be refreshed) say nothing about
  the record being sent: every other record would fail the same way.  The run
  stops claiming work, gives back what it had not delivered exactly as it was
  (no attempt counted, nothing logged as failed), logs **one** error for the run
  and the command exits non-zero.  :func:`is_auth_failure` tells them apart;
  :func:`auth_stop_error` is the error the run ends with.
* **Any other exception** out of one record's work (a Klaviyo answer of the wrong
  shape that slipped past the client, a bug) becomes that record's failure, retried
  as one that may pass, never a traceback and never a change left claimed.
  :func:`unexpected_failure` words it, with "Error calling Klaviyo" when the
  exception came from talking to Klaviyo.
"""

from __future__ import annotations

import traceback

from engine.catalog import ERROR_CALLING_KLAVIYO
from engine.errors import AuthError, KlaviyoApiError, KlaviyoAuthError, KlaviyoSyncError
from engine.hub._db import describe

#: What an operator does about refused credentials.
AUTH_HINT = ("check the private API key (api_key in the settings file, or KLAVIYO_API_KEY) and its scopes, "
             "or, for an OAuth connection, run `klaviyo-sync auth login`")
#: Code of an unexpected failure of one record (the outbound flows' own range).
CODE_UNEXPECTED = "O009"
_MAX_TEXT = 300


def is_auth_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means Klaviyo refused the credentials (401/403, or an OAuth refresh failed).

    A 403 ``permission_denied`` is not: the credentials lack a scope this call needs, and
    calls needing other scopes still work, so it is the record's failure (logged naming the
    scope), and the run goes on."""
    if isinstance(exc, KlaviyoApiError) and exc.status == 403 and exc.klaviyo_code == "permission_denied":
        return False
    if isinstance(exc, (KlaviyoAuthError, AuthError)):
        return True
    return isinstance(exc, KlaviyoApiError) and exc.status in (401, 403)


def auth_stop_error(exc: KlaviyoSyncError, what: str) -> KlaviyoAuthError:
    """The one error a run stopped by refused credentials ends with: Klaviyo's text, what was left, what to do."""
    status = exc.status if isinstance(exc, KlaviyoApiError) else 401
    return KlaviyoAuthError(exc.message, status=status, code=exc.code, detail=f"{what}; {AUTH_HINT}")


def from_klaviyo(exc: BaseException) -> bool:
    """Whether the exception was raised while talking to Klaviyo (the client or its HTTP library)."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith(("engine.klaviyo", "httpx", "httpcore", "json")):
            return True
    return False


def unexpected_failure(exc: BaseException) -> str:
    """One line for an exception no layer turned into an error of ours."""
    text = describe(exc)
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT - 3] + "..."
    if from_klaviyo(exc):
        return f"{ERROR_CALLING_KLAVIYO}: Klaviyo's answer could not be read ({text})"
    return f"unexpected failure while transferring the record ({text})"


__all__ = ["AUTH_HINT", "CODE_UNEXPECTED", "auth_stop_error", "from_klaviyo", "is_auth_failure",
           "unexpected_failure"]
