"""The fake provider: `python -m llmgather.fake` or `llmgather fake-server`. Imports nothing from llmgather."""

from llmgather.fake.common import FakeConfig, expected_content, prompt_digest, prompt_text
from llmgather.fake.server import FakeProvider, serve

__all__ = ["FakeConfig", "FakeProvider", "expected_content", "prompt_digest", "prompt_text", "serve"]
