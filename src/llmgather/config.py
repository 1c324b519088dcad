"""The one configuration boundary: every option checked once, before anything is sent.

Flags, `--models` TOML tables and Python keywords all come through `ModelConfig.build` and `RunConfig.build`,
so a bad value gets the same `InputError` (exit 2 at the command line) with the same message whichever way it
came in: NaN, infinity or a negative limit, an endpoint without a scheme, a provider nobody knows, a key with
a carriage return on its end.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmgather.errors import InputError
from llmgather.limits import Limits
from llmgather.limits.shared_redis import redacted
from llmgather.limits.shared_state import SharedStore
from llmgather.litellm_files import litellm_file
from llmgather.pricing import Prices, price_of
from llmgather.retry import RetryPolicy

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
OPENAI_API_BASE = "https://api.openai.com/v1"
ANTHROPIC_API_BASE = "https://api.anthropic.com"
GEMINI_API_BASE = "https://generativelanguage.googleapis.com/v1beta/openai"


@dataclass(frozen=True, slots=True)
class Provider:
    """A provider served natively: which wire it speaks, where its own endpoint is, and the variable whose
    key is sent there (and only there) unasked."""

    prefix: str
    wire: str
    """The backend that speaks to it: "openai" (chat completions) or "anthropic" (messages)."""
    api_base: str | None
    key_env: str | None
    cache_reads_count: bool = True
    """Whether prompt-cache reads count against the input-token limit (Anthropic leaves them out)."""
    default_max_tokens: int | None = None
    """`max_tokens` sent for a request that sets none, where the provider requires one."""


ANTHROPIC_MAX_TOKENS = 4096
"""`max_tokens` for a request that gives none (Anthropic requires it). 4,096 is the largest value every Claude
model accepts (Claude 3 Haiku's output ceiling), longer than nearly every answer; and Anthropic admits a request
against its output-token limit at its `max_tokens`, so a larger default would hold back output capacity that
typical answers never use."""


PROVIDERS = (
    Provider("openai/", "openai", OPENAI_API_BASE, DEFAULT_KEY_ENV),
    Provider(
        "anthropic/",
        "anthropic",
        ANTHROPIC_API_BASE,
        "ANTHROPIC_API_KEY",
        cache_reads_count=False,
        default_max_tokens=ANTHROPIC_MAX_TOKENS,
    ),
    Provider("gemini/", "openai", GEMINI_API_BASE, "GEMINI_API_KEY"),
    Provider("hosted_vllm/", "openai", None, None),
)
"""Providers with native backends, by the prefix LiteLLM spells them with; the rest go through LiteLLM."""
NATIVE_PREFIXES = tuple(p.prefix for p in PROVIDERS)
_BARE = PROVIDERS[0]  # a model named without a provider is OpenAI's


def native_provider(model: str, api_base: str | None) -> Provider | None:
    """The native provider serving `model`, or None for LiteLLM. A bare name is OpenAI's; any other model
    with an explicit api base is served by an OpenAI-compatible endpoint of the user's own."""
    for provider in PROVIDERS:
        if model.startswith(provider.prefix):
            return provider
    if "/" not in model:
        return _BARE
    return Provider("", "openai", None, None) if api_base is not None else None


def uses_native_backend(model: str, api_base: str | None) -> bool:
    return native_provider(model, api_base) is not None


def provider_model_name(model: str) -> str:
    """The model's name as the endpoint knows it: the provider never sees the routing prefixes."""
    for prefix in NATIVE_PREFIXES:
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


MODEL_SETTINGS = frozenset(
    {
        "api_base",
        "api_key_env",
        "concurrency",
        "rpm",
        "tpm",
        "input_tpm",
        "output_tpm",
        "timeout",
        "max_retries",
        "deadline",
        "shared",
    }
)
"""A model's settings, named alike as flags (`--max-retries`), TOML keys and Python keywords."""
MODEL_KEYWORDS = MODEL_SETTINGS | {"api_key", "prices"}
"""`ModelConfig.build`'s keywords: the settings, a key given directly, and prices by model."""
RUN_KEYWORDS = frozenset(
    {
        *("output", "resume", "retry_failed", "overwrite", "cache_deterministic_only", "max_cost", "max_requests"),
        *("grace", "batch", "by", "batch_size", "detach", "shared_optional"),
    }
)
"""`RunConfig.build`'s keywords besides the models."""


def _number(name: str, value: Any, *, low: float = 0.0, low_open: bool = True, whole: bool = False) -> float:
    """`value` as a finite number above `low` (or at least it), else an InputError naming `name`."""
    kind = "a whole number" if whole else "a number"
    bound = f"above {low:g}" if low_open else f"of at least {low:g}"
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (not whole or isinstance(value, int))
    if ok and (not math.isfinite(value) or value < low or (low_open and value == low)):
        ok = False
    if not ok:
        raise InputError(f"{name} must be {kind} {bound}, got {json.dumps(value, default=repr)}")
    return value  # type: ignore[no-any-return]


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name}= takes True or False, got {json.dumps(value, default=repr)}")
    return value


def _optional(name: str, value: Any, **bounds: Any) -> Any:
    return None if value is None else _number(name, value, **bounds)


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(where: object) -> bool:
    """Whether `where` (a `--cache` or `--shared` value) names a Redis rather than a file."""
    return isinstance(where, str) and where.startswith(REDIS_SCHEMES)


def check_shared(shared: Any) -> str | SharedStore | None:
    """A Redis URL (redis://HOST:PORT/DB, rediss://, unix://), a store object, or None."""
    if shared is None or (hasattr(shared, "admit") and hasattr(shared, "ping") and not isinstance(shared, str)):
        return shared
    if isinstance(shared, str):
        parts = urlsplit(shared)
        try:
            parts.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError:
            parts = parts._replace(scheme="")
        if is_redis_url(shared) and parts.scheme and (parts.hostname or parts.path):
            return shared
    raise InputError(
        "--shared (shared=) takes a Redis URL such as redis://localhost:6379/0, got"
        f" {json.dumps(redacted(shared) if isinstance(shared, str) else shared, default=repr)}"
    )


def check_api_base(api_base: Any) -> str | None:
    if api_base is None:
        return None
    if not isinstance(api_base, str):
        raise InputError(f"api_base must be a URL, got {json.dumps(api_base, default=repr)}")
    try:
        parts = urlsplit(api_base.strip())
        port_ok = parts.port is None or parts.port > 0  # reading it checks it: a port past 65535 is a ValueError
    except ValueError as exc:
        raise InputError(f"api_base {api_base!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise InputError(
            f"api_base {api_base!r} is not an http(s):// URL: give the endpoint whole, e.g. http://localhost:8000/v1"
        )
    if parts.username is not None or parts.password is not None:
        # Not quoted: the credentials would be printed with it, and the endpoint is printed in every summary.
        raise InputError(
            "api_base carries credentials (user:password@host): give the key with --api-key-env (api_key_env=)"
        )
    if parts.query or parts.fragment:
        raise InputError("api_base has a query or fragment (?... or #...): give the endpoint alone, a path at most")
    return api_base.strip()


def check_model_name(model: Any, api_base: str | None) -> str:
    if not isinstance(model, str) or not model.strip():
        raise InputError(f"a model name must be a non-empty string, got {json.dumps(model, default=repr)}")
    if not model.rsplit("/", 1)[-1].strip():
        raise InputError(f"model {model!r} names a provider but no model: give provider/name, e.g. openai/gpt-5-mini")
    native = native_provider(model, api_base)
    if native is not None and native.api_base is None and api_base is None:
        raise InputError(f"model {model}: {native.prefix}... names a server of your own: give its URL with --api-base")
    if api_base is not None or native is not None:
        return model  # an endpoint of the user's own serves whatever names it likes
    provider = model.split("/", 1)[0]
    known = litellm_providers()
    if known is None:
        raise InputError(
            f"model {model}: {provider!r} is not a provider llmgather serves natively (openai/...),"
            " and the others need LiteLLM: pip install 'llmgather[litellm]'"
        )
    if provider not in known:
        raise InputError(
            f"model {model}: no provider is called {provider!r} (spell it as LiteLLM does, e.g. openai/gpt-5-mini,"
            " anthropic/claude-sonnet-4-5; for a server of your own give --api-base)"
        )
    return model


@functools.cache
def litellm_providers() -> frozenset[str] | None:
    """The provider prefixes LiteLLM routes, read from the files it ships (importing it takes seconds);
    None without LiteLLM."""
    providers: set[str] = set()
    for name in ("provider_endpoints_support_backup.json", "model_prices_and_context_window_backup.json"):
        path = litellm_file(name)
        if path is None:
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(document.get("providers"), dict):
            providers.update(document["providers"])
        providers.update(
            entry["litellm_provider"]
            for entry in document.values()
            if isinstance(entry, dict) and isinstance(entry.get("litellm_provider"), str)
        )
    return frozenset(providers) if providers else None


def check_key(key: Any, where: str) -> str | None:
    if key is not None and not isinstance(key, str):
        raise InputError(f"the API key in {where} must be a string, got {type(key).__name__}")
    if key is not None and any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InputError(
            f"the API key in {where} contains a control character (a CRLF .env file leaves a \\r on its end): remove it"
        )
    return key


def check_prices(prices: Mapping[str, Any] | None) -> dict[str, Prices]:
    """Prices by model, each `[input, output]`, `[input, output, cache_read]` or `[input, output, cache_read,
    cache_write]` in USD per million tokens, or a `Prices`. A cache rate left out (or None) is the input rate."""
    checked: dict[str, Prices] = {}
    for model, price in (prices or {}).items():
        if isinstance(price, Prices):
            price = (price.input, price.output, price.cache_read, price.cache_write)
        if not isinstance(price, list | tuple) or not 2 <= len(price) <= 4:
            raise InputError(
                f"the price of {model} must be [input, output] or [input, output, cache_read, cache_write]"
                " in USD per million tokens"
            )
        names = ("input", "output", "cache-read", "cache-write")
        rates = [_optional(f"the {n} price of {model}", p, low_open=False) for n, p in zip(names, price, strict=False)]
        rates = [None if r is None else float(r) for r in rates] + [None] * (4 - len(rates))
        if rates[0] is None or rates[1] is None:
            raise InputError(f"the price of {model} needs its input and output prices, got {list(price)}")
        checked[model] = Prices(rates[0], rates[1], rates[2], rates[3])
    return checked


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Everything needed to drive one model at one endpoint, checked."""

    model: str
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    limits: Limits = field(default_factory=Limits)
    timeout_s: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prices: Mapping[str, Prices] = field(default_factory=dict)
    """Prices the user gave (USD per million tokens), by model; they win over any table."""
    api_key_env: str | None = None
    """The variable the user named for the key, if any."""
    shared: str | SharedStore | None = None
    """Where its pace is shared with other processes (`--shared`): a Redis URL, or a store (a Ray actor's)."""

    @classmethod
    def build(
        cls,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 50,
        rpm: float | None = None,
        tpm: float | None = None,
        input_tpm: float | None = None,
        output_tpm: float | None = None,
        timeout: float = 120.0,
        max_retries: int = 5,
        deadline: float | None = 600.0,
        prices: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        shared: str | SharedStore | None = None,
    ) -> ModelConfig:
        """Check every setting and find the key. The key goes only where it belongs: OPENAI_API_KEY to
        OpenAI's own endpoint, ANTHROPIC_API_KEY to Anthropic's, GEMINI_API_KEY to Google's; any other
        endpoint gets a key only from `api_key` or a named `api_key_env`."""
        api_base = check_api_base(api_base)
        model = check_model_name(model, api_base)
        if api_key_env is not None and (not isinstance(api_key_env, str) or not api_key_env):
            raise InputError(f"api_key_env must name an environment variable, got {api_key_env!r}")
        if api_key is None:
            env = api_key_env or _own_key_env(model, api_base)
            api_key = ((environ or os.environ).get(env) or None) if env else None  # set but empty is unset
            check_key(api_key, env or "")
        else:
            check_key(api_key, "api_key")
        limits = Limits(
            concurrency=int(_number("concurrency", concurrency, low=1, low_open=False, whole=True)),
            rpm=_optional("rpm", rpm),
            tpm=_optional("tpm", tpm),
            input_tpm=_optional("input_tpm", input_tpm),
            output_tpm=_optional("output_tpm", output_tpm),
        )
        retry = RetryPolicy(
            max_retries=int(_number("max_retries", max_retries, low_open=False, whole=True)),
            deadline_s=_optional("deadline", deadline),
        )
        return cls(
            model=model,
            api_base=api_base,
            api_key=api_key,
            limits=limits,
            timeout_s=_number("timeout", timeout),
            retry=retry,
            prices=check_prices(prices),
            api_key_env=api_key_env,
            shared=check_shared(shared),
        )

    def price(self) -> Prices | None:
        """USD per million prompt and completion tokens, if known. At the user's own endpoint only their
        prices and the bundled table count: LiteLLM's map prices the provider's endpoints."""
        return price_of(self.model, self.prices, provider_endpoint=self.api_base is None)

    @property
    def cache_reads_count(self) -> bool:
        """Whether the provider counts prompt-cache reads against its input-token limit."""
        provider = native_provider(self.model, self.api_base)
        return provider is None or provider.cache_reads_count

    @property
    def default_max_tokens(self) -> int | None:
        """The `max_tokens` its backend sends for a request that sets none (the provider reserves it)."""
        provider = native_provider(self.model, self.api_base)
        return None if provider is None else provider.default_max_tokens

    def missing_key(self) -> str | None:
        """Why no request could authenticate, found before any is sent; None when one may.

        A local server (any `api_base`) often needs no key, and LiteLLM's providers read their own."""
        if self.api_key is not None:
            return None
        if self.api_key_env is not None:
            return f"{self.api_key_env} is not set"
        own = _own_key_env(self.model, self.api_base)
        return f"{own} is not set" if own is not None else None

    def check_key(self) -> None:
        missing = self.missing_key()
        if missing is not None:
            where = self.api_base or "the provider's endpoint"
            raise InputError(
                f"no API key for {self.model} at {where}: {missing}."
                " Set it, or name the variable that holds the key with --api-key-env (api_key_env=)"
            )

    def check_priced(self) -> None:
        """A cost budget with a model of unknown price would spend without limit: refused before sending."""
        if self.price() is None:
            raise InputError(
                f"max_cost needs the price of {self.model}, which no price table knows:"
                f" give it with --price {self.model}=USD_PER_MTOK_IN,USD_PER_MTOK_OUT"
                f" (prices={{{self.model!r}: (usd_per_mtok_in, usd_per_mtok_out)}})"
            )


def _own_key_env(model: str, api_base: str | None) -> str | None:
    """The variable whose key goes unasked to this endpoint: only a provider's own (OPENAI_API_KEY to
    api.openai.com, never to a server that merely speaks its wire)."""
    provider = native_provider(model, api_base)
    if provider is None or provider.api_base is None or provider.key_env is None:
        return None
    if api_base is not None and urlsplit(api_base).hostname != urlsplit(provider.api_base).hostname:
        return None
    return provider.key_env


# -- the --models TOML file ---------------------------------------------------------------------------

_TOML_KEYS = MODEL_SETTINGS | {"name", "price"}


def read_model_tables(path: Path) -> list[dict[str, Any]]:
    """The `[[model]]` tables of a `--models` file: each a table with a name and only known keys. Their
    values are checked by `ModelConfig.build`, as flags and keywords are.

        [[model]]
        name = "openai/llama-3.1-8b"
        api_base = "http://localhost:8000/v1"
        concurrency = 100
        price = [0.0, 0.0]          # USD per million input and output tokens (then cache read, cache write: optional)
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read it: {getattr(exc, 'strerror', None) or exc}", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML ({exc})", source=str(path)) from None
    tables = document.get("model")
    if not isinstance(tables, list) or not tables:
        raise InputError("expected one or more [[model]] tables", source=str(path))
    for number, table in enumerate(tables, start=1):
        where = f"{path}: [[model]] number {number}"
        if not isinstance(table, dict):
            raise InputError("is not a table", source=where)
        unknown = sorted(set(table) - _TOML_KEYS)
        if unknown:
            raise InputError(f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(_TOML_KEYS))})", source=where)
        if "name" not in table:
            raise InputError("has no name", source=where)
    return tables


def configs_from_tables(path: Path, tables: Sequence[dict[str, Any]], defaults: Mapping[str, Any]) -> list[ModelConfig]:
    """One config per table, its own settings over `defaults` (the flags); errors name the table."""
    configs = []
    for number, table in enumerate(tables, start=1):
        settings = {**defaults, **{k: v for k, v in table.items() if k not in ("name", "price")}}
        prices = dict(settings.pop("prices", None) or {})
        if "price" in table:
            prices[str(table["name"])] = table["price"]
        try:
            configs.append(ModelConfig.build(table["name"], **settings, prices=prices))
        except InputError as error:
            raise InputError(str(error), source=f"{path}: [[model]] number {number}") from None
    return configs


# -- the run ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How a `--batch` run goes through the providers' batch APIs."""

    by_s: float | None = None
    """`--by`: seconds from the start after which what the batches have not answered is cancelled and sent
    online."""
    size: int | None = None
    """`--batch-size`: requests per batch, below the provider's own cap."""
    detach: bool = False
    """`--detach`: submit, then exit; a later `--resume` collects."""

    @classmethod
    def build(cls, *, by: float | str | None = None, size: int | None = None, detach: bool = False) -> BatchOptions:
        by_s = None if by is None else parse_duration("--by", by)
        return cls(by_s, _optional("--batch-size", size, low=1, low_open=False, whole=True), bool(detach))


def _batch_options(batch: Any, by: float | str | None, size: int | None, detach: Any) -> BatchOptions | None:
    if not isinstance(batch, bool) or not isinstance(detach, bool):
        raise InputError("batch= and detach= take True or False")
    if batch:
        return BatchOptions.build(by=by, size=size, detach=detach)
    given = {"--by (by=)": by, "--batch-size (batch_size=)": size, "--detach (detach=)": detach}
    for flag, value in given.items():
        if value not in (None, False):
            raise InputError(f"{flag} goes with --batch (batch=True)")
    return None


def _cache_place(cache: str | os.PathLike[str] | None) -> Path | str | None:
    """A Redis URL stays as given (a Path would fold its `//`); anything else is an SQLite file."""
    if isinstance(cache, str) and is_redis_url(cache):
        return cache
    return Path(cache) if cache is not None else None


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(name: str, value: float | str) -> float:
    """Seconds, from a number of seconds or text such as `90s`, `10m`, `2h`, `1h30m`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(name, value)
    text, seconds, number = str(value).strip().lower(), 0.0, ""
    if text.count(".") > 1:
        text = ""  # refused below
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif char in _UNITS and number:
            seconds, number = seconds + float(number) * _UNITS[char], ""
        else:
            number = "!"
            break
    if number and number != "!":
        seconds += float(number)  # a bare number is seconds
    if number == "!" or not text or not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"{name} takes a duration such as 90s, 10m, 2h or 1h30m, got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One run, checked: the models (each request goes to every one), the fallbacks, the output and the
    spending limits. The command line and the Python API both build one and hand it to `runner.Run`."""

    models: tuple[ModelConfig, ...]
    fallbacks: tuple[ModelConfig, ...] = ()
    output: Path | None = None
    resume: bool = False
    retry_failed: bool = False
    overwrite: bool = False
    cache: Path | str | None = None
    """An SQLite file, or a Redis URL (a str, as given)."""
    cache_deterministic_only: bool = False
    max_cost: float | None = None
    max_requests: int | None = None
    grace_s: float = 10.0
    batch: BatchOptions | None = None
    """Through the providers' batch APIs (`--batch`), or online (None)."""
    shared_optional: bool = False
    """`--shared-optional`: a shared store that does not answer at the start is waited for while pacing alone,
    rather than refused."""

    @classmethod
    def build(
        cls,
        models: Sequence[ModelConfig],
        *,
        fallbacks: Sequence[ModelConfig] = (),
        output: str | os.PathLike[str] | None = None,
        resume: bool = False,
        retry_failed: bool = False,
        overwrite: bool = False,
        cache: str | os.PathLike[str] | None = None,
        cache_deterministic_only: bool = False,
        max_cost: float | None = None,
        max_requests: int | None = None,
        grace: float = 10.0,
        batch: bool = False,
        by: float | str | None = None,
        batch_size: int | None = None,
        detach: bool = False,
        shared_optional: bool = False,
    ) -> RunConfig:
        """`batch=True` sends through the providers' batch APIs; `by`, `batch_size` and `detach` are
        `--by`, `--batch-size` and `--detach`, and go with it."""
        fallback_names = {c.model for c in fallbacks}
        firsts = tuple(c for c in models if c.model not in fallback_names)
        if not models:
            raise InputError("no model: give -m MODEL (repeatable) or --models FILE (model= in Python)")
        if not firsts:
            raise InputError("every model given is a fallback: which one goes first?")
        names = [c.model for c in firsts]
        repeated = next((name for name in names if names.count(name) > 1), None)
        if repeated is not None:
            raise InputError(f"model {repeated} is given twice: each model's results are kept apart by its name")
        if resume and overwrite:
            raise InputError("--resume continues the output and --overwrite replaces it: choose one")
        if retry_failed and not resume:
            raise InputError("--retry-failed goes with --resume")
        if resume and output is None:
            raise InputError("--resume needs the output file to continue: give it with -o (output=)")
        config = cls(
            models=firsts,
            fallbacks=tuple(fallbacks),
            output=Path(output) if output is not None else None,
            resume=resume,
            retry_failed=retry_failed,
            overwrite=overwrite,
            cache=_cache_place(cache),
            cache_deterministic_only=cache_deterministic_only,
            max_cost=_optional("max_cost", max_cost),
            max_requests=_optional("max_requests", max_requests, low=1, low_open=False, whole=True),
            grace_s=_number("grace", grace, low_open=False),
            batch=_batch_options(batch, by, batch_size, detach),
            shared_optional=_flag("shared_optional", shared_optional),
        )
        if config.shared_optional and not config.shared:
            raise InputError("--shared-optional (shared_optional=) goes with --shared (shared=)")
        if config.batch is not None:
            config.check_batch()
        if config.max_cost is not None:
            for c in config.everyone:
                c.check_priced()
        return config

    @property
    def everyone(self) -> tuple[ModelConfig, ...]:
        return (*self.models, *self.fallbacks)

    @property
    def shared(self) -> list[str | SharedStore]:
        """Every store a model's pace is shared through, once each."""
        stores: list[str | SharedStore] = []
        for c in self.everyone:
            if c.shared is not None and c.shared not in stores:
                stores.append(c.shared)
        return stores

    def check_batch(self) -> None:
        """A batch run needs a provider with a batch API, and its output file for the journal beside it."""
        for c in self.models:
            provider = native_provider(c.model, c.api_base)
            if provider is None:
                raise InputError(
                    f"--batch: {c.model} has no batch API llmgather speaks (openai/, anthropic/, gemini/ and "
                    "OpenAI-compatible endpoints with /v1/batches do)"
                )
        if self.fallbacks:
            raise InputError("--batch does not take fallback models: a batch's failures are retried in the next one")
        if self.output is None:
            raise InputError("--batch needs an output file (-o, output=): its journal of batches is kept beside it")

    def check_keys(self, served: Collection[str] = ()) -> None:
        """Refuse, before anything is opened or sent, a model that would have no key; `served` names the
        models given a backend of the caller's own, which need none."""
        for c in self.everyone:
            if c.model not in served:
                c.check_key()
