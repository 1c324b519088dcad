"""`--models FILE`: each model its own endpoint, key variable, limits and price, in TOML.

    [[model]]
    name = "openai/gpt-5-mini"
    rpm = 500
    tpm = 200000

    [[model]]
    name = "openai/llama-3.1-8b"
    api_base = "http://localhost:8000/v1"
    concurrency = 100
    price = [0.0, 0.0]          # USD per million prompt and completion tokens

Settings a model leaves out come from the command line's flags.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from llmgather.errors import InputError

_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "api_base": (str,),
    "api_key_env": (str,),
    "concurrency": (int,),
    "rpm": (int, float),
    "tpm": (int, float),
    "timeout": (int, float),
    "max_retries": (int,),
    "deadline": (int, float),
    "price": (list,),
}


def read_models(path: Path) -> list[dict[str, Any]]:
    """The `[[model]]` entries, checked: each has a name, and only known settings of the right type."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read it: {exc.strerror}", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML ({exc})", source=str(path)) from None
    entries = document.get("model")
    if not isinstance(entries, list) or not entries:
        raise InputError("expected one or more [[model]] tables", source=str(path))
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: [[model]] number {number}"
        if "name" not in entry:
            raise InputError("has no name", source=where)
        for key, value in entry.items():
            if key not in _TYPES:
                raise InputError(f"unknown setting {key!r} (known: {', '.join(_TYPES)})", source=where)
            if isinstance(value, bool) or not isinstance(value, _TYPES[key]):
                raise InputError(f"{key} has the wrong type ({type(value).__name__})", source=where)
        price = entry.get("price")
        if price is not None and (len(price) != 2 or not all(isinstance(p, int | float) for p in price)):
            raise InputError("price must be [prompt, completion] in USD per million tokens", source=where)
    return entries
