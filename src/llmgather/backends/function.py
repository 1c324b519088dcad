"""Any async callable as a backend: an agent step, a local model, a test double."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from llmgather.types import Request, Response

Handler = Callable[[Request], Awaitable[Response | str]]


class FunctionBackend:
    def __init__(self, handler: Handler, *, model: str = "function", endpoint: str = "function") -> None:
        self._handler = handler
        self.model = model
        self.endpoint = endpoint

    async def send(self, request: Request) -> Response:
        answer = await self._handler(request)
        return Response(content=answer) if isinstance(answer, str) else answer

    async def aclose(self) -> None:
        return None
