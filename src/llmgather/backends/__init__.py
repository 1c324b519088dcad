"""Backends: one small protocol, and the choice of backend for a model."""

from __future__ import annotations

from llmgather.backends.anthropic import AnthropicBackend
from llmgather.backends.base import Backend
from llmgather.backends.function import FunctionBackend
from llmgather.backends.openai import OpenAIBackend
from llmgather.backends.redact import redact
from llmgather.config import native_provider


def make_backend(model: str, *, api_base: str | None, api_key: str | None, max_connections: int) -> Backend:
    provider = native_provider(model, api_base)
    if provider is not None:
        base = api_base or provider.api_base
        if provider.wire == "anthropic":
            return AnthropicBackend(model, api_base=base, api_key=api_key, max_connections=max_connections)
        return OpenAIBackend(model, api_base=base, api_key=api_key, max_connections=max_connections)
    from llmgather.backends.litellm import LiteLLMBackend

    return LiteLLMBackend(model, api_key=api_key)


__all__ = ["AnthropicBackend", "Backend", "FunctionBackend", "OpenAIBackend", "make_backend", "redact"]
