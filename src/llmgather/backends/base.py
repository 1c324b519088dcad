"""The backend contract: send one request, return the answer or raise a classified error.

A backend knows nothing of limits or retries: it reports what the provider said (headers, usage)
and the engine decides what to do about it.
"""

from __future__ import annotations

from typing import Protocol

from llmgather.types import Request, Response


class Backend(Protocol):
    model: str
    """The model as the provider names it."""
    endpoint: str
    """Where requests go, for messages and for keying limits; never holds a secret."""

    async def send(self, request: Request) -> Response:
        """One attempt. Raises an `llmgather.errors.RequestError` subclass on failure."""
        ...

    async def aclose(self) -> None: ...
