"""Backends: one small protocol, and the choice of backend for a model."""

from __future__ import annotations

from llmgather.backends.base import Backend
from llmgather.backends.function import FunctionBackend
from llmgather.backends.openai import OpenAIBackend
from llmgather.backends.redact import redact
from llmgather.config import uses_native_backend


def make_backend(model: str, *, api_base: str | None, api_key: str | None, max_connections: int) -> Backend:
    if uses_native_backend(model, api_base):
        return OpenAIBackend(model, api_base=api_base, api_key=api_key, max_connections=max_connections)
    from llmgather.backends.litellm import LiteLLMBackend

    return LiteLLMBackend(model, api_key=api_key)


__all__ = ["Backend", "FunctionBackend", "OpenAIBackend", "make_backend", "redact"]
