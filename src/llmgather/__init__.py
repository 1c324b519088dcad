"""llmgather: run thousands of LLM requests at once, at the provider's rate limit, losing nothing.

The names load on first use, so that `import llmgather` (and `llmgather --help`) stays instant.
"""

import importlib
import typing

if typing.TYPE_CHECKING:
    from llmgather.backends.function import FunctionBackend
    from llmgather.client import Client, gather, run
    from llmgather.config import ModelConfig
    from llmgather.engine import Engine, EngineStats
    from llmgather.errors import (
        AuthenticationError,
        ConnectError,
        Error,
        FatalError,
        InputError,
        ModelNotFoundError,
        PermanentError,
        QuotaExceededError,
        RateLimitError,
        RequestError,
        RequestTimeout,
        RunStopped,
        ServerError,
        TransientError,
    )
    from llmgather.limits import Limits
    from llmgather.retry import RetryPolicy
    from llmgather.types import ErrorInfo, Request, Response, Result, Usage

__version__ = "0.1.0"

_HOMES = {
    "FunctionBackend": "llmgather.backends.function",
    "Client": "llmgather.client",
    "ModelConfig": "llmgather.config",
    "gather": "llmgather.client",
    "run": "llmgather.client",
    "Engine": "llmgather.engine",
    "EngineStats": "llmgather.engine",
    "AuthenticationError": "llmgather.errors",
    "ConnectError": "llmgather.errors",
    "Error": "llmgather.errors",
    "FatalError": "llmgather.errors",
    "InputError": "llmgather.errors",
    "ModelNotFoundError": "llmgather.errors",
    "PermanentError": "llmgather.errors",
    "QuotaExceededError": "llmgather.errors",
    "RateLimitError": "llmgather.errors",
    "RequestError": "llmgather.errors",
    "RequestTimeout": "llmgather.errors",
    "RunStopped": "llmgather.errors",
    "ServerError": "llmgather.errors",
    "TransientError": "llmgather.errors",
    "Limits": "llmgather.limits",
    "RetryPolicy": "llmgather.retry",
    "ErrorInfo": "llmgather.types",
    "Request": "llmgather.types",
    "Response": "llmgather.types",
    "Result": "llmgather.types",
    "Usage": "llmgather.types",
}


def __getattr__(name: str) -> typing.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'llmgather' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The lazily loaded names too, for completion and help()."""
    return sorted({*globals(), *_HOMES})


__all__ = [
    "AuthenticationError",
    "Client",
    "ConnectError",
    "Engine",
    "EngineStats",
    "Error",
    "ErrorInfo",
    "FatalError",
    "FunctionBackend",
    "InputError",
    "Limits",
    "ModelConfig",
    "ModelNotFoundError",
    "PermanentError",
    "QuotaExceededError",
    "RateLimitError",
    "Request",
    "RequestError",
    "RequestTimeout",
    "Response",
    "Result",
    "RetryPolicy",
    "RunStopped",
    "ServerError",
    "TransientError",
    "Usage",
    "__version__",
    "gather",
    "run",
]
