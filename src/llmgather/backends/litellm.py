"""Every other provider (Anthropic, Gemini, Bedrock, ...) through `litellm.acompletion`.

LiteLLM is imported on first use: it takes seconds to import. Both of its retry layers are turned off so
that ours govern: its own wrapper (`num_retries`, which retries even 400s) and the provider SDK's
beneath it (`max_retries`, which LiteLLM otherwise sets to the SDK's default of 2). With both at 0, one
attempt of ours is one request at the server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from llmgather.backends.redact import redact
from llmgather.errors import (
    ConnectError,
    ModelNotFoundError,
    PermanentError,
    RequestError,
    RequestTimeout,
    error_for_status,
)
from llmgather.retry import parse_retry_after
from llmgather.types import Request, Response, Usage

_PROVIDER_HEADER_PREFIX = "llm_provider-"


class LiteLLMBackend:
    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None) -> None:
        self.model = model
        self.endpoint = api_base or f"litellm:{model.split('/', 1)[0]}"
        self._api_base = api_base
        self._api_key = api_key
        self._litellm: Any = None

    def _load(self) -> Any:
        # Otherwise LiteLLM fetches its price map from GitHub at import, retrying for seconds when offline.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            import litellm
        except ImportError as exc:
            raise PermanentError(f"model {self.model} needs LiteLLM: pip install 'llmgather[litellm]'") from exc
        litellm.suppress_debug_info = True
        self._litellm = litellm
        return litellm

    async def send(self, request: Request) -> Response:
        litellm = self._litellm or self._load()
        kwargs: dict[str, Any] = {**request.params, "num_retries": 0, "max_retries": 0}
        if self._api_base:
            kwargs["api_base"] = self._api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        try:
            reply = await litellm.acompletion(model=self.model, messages=request.messages, **kwargs)
        except Exception as exc:
            raise self._translate(exc) from exc
        choice = reply.choices[0]
        usage = getattr(reply, "usage", None)
        hidden = getattr(reply, "_hidden_params", None) or {}
        return Response(
            content=choice.message.content,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) if usage else None,
            finish_reason=choice.finish_reason,
            headers=_provider_headers(hidden.get("additional_headers") or {}),
        )

    def _translate(self, exc: Exception) -> RequestError:
        """LiteLLM's exceptions onto ours, most specific first."""
        litellm = self._litellm
        said = str(getattr(exc, "message", None) or exc)
        message = redact(said, self._api_key)
        if isinstance(exc, litellm.Timeout):
            return RequestTimeout(message)
        if isinstance(exc, litellm.APIConnectionError):
            return ConnectError(message)
        if isinstance(exc, litellm.NotFoundError):
            return ModelNotFoundError(message, status=404, code="model_not_found")
        status = getattr(exc, "status_code", None)
        if not isinstance(status, int):
            return PermanentError(f"{type(exc).__name__}: {message}")
        response = getattr(exc, "response", None)
        headers: Mapping[str, str] = getattr(response, "headers", None) or {}
        code = "insufficient_quota" if status == 429 and "insufficient_quota" in said else None
        return error_for_status(status, message, code=code, retry_after=parse_retry_after(headers), headers=headers)

    async def aclose(self) -> None:
        return None


def _provider_headers(additional: Mapping[str, Any]) -> dict[str, str]:
    return {
        key[len(_PROVIDER_HEADER_PREFIX) :].lower(): str(value)
        for key, value in additional.items()
        if key.startswith(_PROVIDER_HEADER_PREFIX)
    }
