"""The error taxonomy: what is transient, what is permanent, what stops a run.

    Error                          base of everything llmgather raises
    ├── InputError                 bad input or usage; nothing was sent (exit 2)
    ├── RunStopped                 the run stopped before the end and can be resumed (exit 3)
    │   └── OutputError            the output could not be written (disk full, folder gone); what was written is whole
    └── RequestError               one request failed; carries the HTTP status when there was one
        ├── TransientError         worth another attempt
        │   ├── RateLimitError     429 rate limit (a per-minute quota too)
        │   ├── ServerError        408, 409, 498 capacity, 500, 502, 503, 504, 529 overloaded; an error mid-stream
        │   ├── ConnectError       connection refused, reset or dropped; a stream cut short
        │   └── RequestTimeout     the attempt took longer than its timeout
        ├── PermanentError         this request will never succeed as it is: 400, 404, 413, 422
        └── FatalError             no request will succeed: stop dispatching
            ├── AuthenticationError   401, 403, Google's 400 API_KEY_INVALID
            ├── QuotaExceededError    429 insufficient_quota, a per-day quota, a credit balance too low
            └── ModelNotFoundError    the model does not exist at this endpoint

`x-should-retry: true|false` on an answer overrides its status (as OpenAI's and Anthropic's SDKs let it):
true makes it transient, false permanent.

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
        self.counted = False
        """The provider had accepted the attempt (an error event after a 200 began) and counted it against its
        limits, as an answer would have been."""

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


_TRANSIENT_STATUSES = {408, 409, 429, 498, 500, 502, 503, 504, 529}
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "quota_exceeded", "billing_error"}
_QUOTA_MESSAGES = ("credit balance is too low",)
"""Anthropic says a spent balance with a 400 (invalid_request_error): no request will pass until it is topped up."""
_MODEL_CODES = {"model_not_found", "model_not_available"}
_AUTH_CODES = {"API_KEY_INVALID"}
"""Google answers a bad key with a 400 INVALID_ARGUMENT whose ErrorInfo says so: every request would fail alike."""


def names_a_quota(code: str | None) -> bool:
    """Whether a provider's code names a quota the whole key or project shares: Google's quota ids
    ("GenerateRequestsPerMinutePerProjectPerModel-FreeTier") come with no rate-limit headers, but a 429 that
    names one is the shared limit's, never one request's own."""
    return code is not None and any(f"Per{span}" in code for span in ("Second", "Minute", "Day"))


def error_for_status(
    status: int,
    message: str,
    *,
    code: str | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> RequestError:
    """Map an HTTP answer onto the taxonomy: the one place that knows what a status means.

    `code` is the provider's own name for the error (OpenAI's `code`, Anthropic's `error.type`, the
    `quotaId` of a Gemini quota violation)."""
    kind = _kind(status, message, code)
    should_retry = headers.get("x-should-retry") if headers is not None else None
    if should_retry == "true" and not issubclass(kind, TransientError | FatalError):
        kind = RateLimitError if status == 429 else ServerError
    elif should_retry == "false" and issubclass(kind, TransientError):
        kind = PermanentError
    return kind(message, status=status, code=code, retry_after=retry_after, headers=headers)


def _kind(status: int, message: str, code: str | None) -> type[RequestError]:
    if code in _QUOTA_CODES or (status == 429 and names_a_quota(code) and "PerDay" in str(code)):
        return QuotaExceededError  # a per-day quota (Gemini's quotaId) is not back within any deadline
    if status == 400 and any(words in message.lower() for words in _QUOTA_MESSAGES):
        return QuotaExceededError
    if status == 429:
        return RateLimitError
    if status in (401, 403) or code in _AUTH_CODES:
        return AuthenticationError
    if status == 404 and (code in _MODEL_CODES or (code == "not_found_error" and message.startswith("model:"))):
        return ModelNotFoundError  # Anthropic: {"type": "not_found_error", "message": "model: claude-..."}
    if status in _TRANSIENT_STATUSES or status >= 500:
        return ServerError
    return PermanentError
