"""Data files that an installed LiteLLM ships (its price map, tokenizer encodings), found without importing
LiteLLM, which takes seconds."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def litellm_file(*parts: str) -> Path | None:
    """The path of `parts` inside the installed LiteLLM package, or None if LiteLLM or the file is missing."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return path if path.exists() else None
