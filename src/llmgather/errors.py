"""The error taxonomy: what is transient, what is permanent, what stops a run.

    Error                          base of everything llmgather raises
    ├── InputError                 bad input or usage; nothing was sent (exit 2)
    ├── RunStopped                 the run stopped before the end and can be resumed (exit 3)
    │   └── OutputError            the output could not be written (disk full, folder gone); what was written is whole
    └── RequestError               one request failed; carries the HTTP status when there was one
        ├── TransientError         worth another attempt
        │   ├── RateLimitError     429 rate limit
        │   ├── ServerError        408, 409, 500, 502, 503, 504, 529
        │   ├── ConnectError       connection refused, reset or dropped
        │   └── RequestTimeout     the attempt took longer than its timeout
        ├── PermanentError         this request will never succeed as it is: 400, 404, 413, 422
        └── FatalError             no request will succeed: stop dispatching
            ├── AuthenticationError   401, 403
            ├── QuotaExceededError    429 insufficient_quota
            └── ModelNotFoundError    the model does not exist at this endpoint

Backends translate what their provider says into these, in one place each.
"""

from __future__ import annotations

from collections.abc import Mapping


class Error(Exception):
    """Base of every error llmgather raises."""


class InputError(Error, ValueError):
    """Bad input or usage, found before anything was sent (a ValueError too, as Python expects of bad arguments)."""

    def __init__(self, message: str, *, source: str = "") -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source


class RunStopped(Error):
    """The run stopped early (auth, quota, budget, signal). What finished is kept; the rest can be resumed."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class OutputError(RunStopped):
    """Writing a result failed mid-run (a full disk, a folder gone): the run stops, and every line
    already written is whole, so a resume finishes it."""

    def __init__(self, message: str, *, path: str = "", cause: BaseException | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message, cause=cause)
        self.path = path


class RequestError(Error):
    """One request failed. `type_name` is what the output's error.type says."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        # What the provider said about its limits, so that a 429 teaches the limiter too.
        self.headers: Mapping[str, str] = headers if headers is not None else {}

    @property
    def type_name(self) -> str:
        return type(self).__name__


class TransientError(RequestError):
    """Another attempt may succeed."""


class RateLimitError(TransientError):
    pass


class ServerError(TransientError):
    pass


class ConnectError(TransientError):
    pass


class RequestTimeout(TransientError):
    pass


class PermanentError(RequestError):
    """This request will fail however often it is sent."""


class FatalError(RequestError):
    """Every request will fail: the run must stop."""


class AuthenticationError(FatalError):
    pass


class QuotaExceededError(FatalError):
    pass


class ModelNotFoundError(FatalError):
    pass


_TRANSIENT_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "quota_exceeded"}


def error_for_status(
    status: int,
    message: str,
    *,
    code: str | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> RequestError:
    """Map an HTTP answer onto the taxonomy: the one place that knows what a status means."""
    kind: type[RequestError]
    if status == 429:
        kind = QuotaExceededError if code in _QUOTA_CODES else RateLimitError
    elif status in (401, 403):
        kind = AuthenticationError
    elif status == 404 and code in ("model_not_found", "model_not_available"):
        kind = ModelNotFoundError
    elif status in _TRANSIENT_STATUSES or status >= 500:
        kind = ServerError
    else:
        kind = PermanentError
    return kind(message, status=status, code=code, retry_after=retry_after, headers=headers)
