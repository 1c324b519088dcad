"""The batch API client for a model: chosen by the wire its provider speaks, at the same endpoint as the online
backend (the provider's own, or `--api-base`)."""

from __future__ import annotations

from llmgather.batch.anthropic import AnthropicBatches
from llmgather.batch.api import BatchApi
from llmgather.batch.openai import OpenAIBatches
from llmgather.config import native_provider
from llmgather.errors import InputError


def make_batch_api(model: str, *, api_base: str | None, api_key: str | None) -> BatchApi:
    provider = native_provider(model, api_base)
    if provider is None:
        raise InputError(f"--batch: {model} has no batch API llmgather speaks")
    base = api_base or provider.api_base
    if provider.wire == "anthropic":
        return AnthropicBatches(model, api_base=base, api_key=api_key)
    return OpenAIBatches(model, api_base=base, api_key=api_key)
