"""Token counts known before sending: a fast estimate of the prompt plus the completion budget.

For OpenAI's models, when tiktoken is installed and has the model's encoding at hand, prompts are counted
with it; otherwise the estimate starts at about four characters a token. Either is calibrated by what the
provider reports: every answer's `usage` says how many prompt tokens it counted, and the ratio of those to the raw
estimates scales the next ones. A budget paced on estimates that run high wastes the limit; one paced
on estimates that run low earns 429s.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Iterable

from llmgather.litellm_files import litellm_file
from llmgather.types import Request, Usage

# About four characters a token in English text, and a few tokens of framing per message.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
# Until a completion has been seen, assume this many completion tokens when no budget is given.
DEFAULT_COMPLETION_TOKENS = 256
_OPENAI_FAMILIES = ("gpt-", "chatgpt-", "o1", "o3", "o4", "ft:gpt-")


class TokenEstimator:
    """Estimates a request's tokens; learns the prompt ratio and typical completion length from answers."""

    __slots__ = (
        "_completion_tokens_seen",
        "_completions_seen",
        "_count",
        "_counted_fit",
        "_default_budget",
        "_prompt_fit",
    )

    def __init__(
        self, count: Callable[[Iterable[str]], int | None] | None = None, *, default_budget: int | None = None
    ) -> None:
        """`default_budget`: the `max_tokens` the backend sends for a request that sets none (Anthropic's
        requires one), which the provider reserves against its output limit as if the request had set it."""
        self._count = count  # tokens in a text, exactly (tiktoken), when known
        self._default_budget = default_budget
        self._completion_tokens_seen = 0
        self._completions_seen = 0
        self._prompt_fit = LineFit()
        self._counted_fit = LineFit()

    def estimate(self, request: Request) -> int:
        return self.prompt_tokens(request) + self.expected_completion(request)

    def expected_completion(self, request: Request) -> int:
        """The request's completion budget (or the one the backend sends for it), or the typical completion so
        far when there is none."""
        budget = request.completion_budget()
        if budget is None:
            budget = self._default_budget
        return self.typical_completion() if budget is None else budget

    def prompt_tokens(self, request: Request) -> int:
        """The prompt as billed: every input token, cached or not."""
        return self._prompt_fit.predict(self._raw_prompt_tokens(request))

    def counted_prompt_tokens(self, request: Request) -> int:
        """The prompt as the provider counts it against its input limit: less the cache reads where they are
        not counted (Anthropic), which only answers can tell."""
        return self._counted_fit.predict(self._raw_prompt_tokens(request))

    def expected_usage(self, request: Request) -> Usage:
        """What an answer to it is expected to use: its prompt, and its completion budget or the typical one."""
        return Usage(self.prompt_tokens(request), self.expected_completion(request))

    def typical_completion(self) -> int:
        if self._completions_seen == 0:
            return DEFAULT_COMPLETION_TOKENS
        return math.ceil(self._completion_tokens_seen / self._completions_seen)

    def observe(self, request: Request, usage: Usage, counted_prompt: int | None = None) -> None:
        """An answer's usage; `counted_prompt`: the prompt tokens its provider counted against the input limit,
        when that is not the whole prompt."""
        self._completion_tokens_seen += usage.completion_tokens
        self._completions_seen += 1
        if usage.prompt_tokens > 0:
            raw = self._raw_prompt_tokens(request)
            self._prompt_fit.add(raw, usage.prompt_tokens)
            self._counted_fit.add(raw, usage.prompt_tokens if counted_prompt is None else counted_prompt)

    def _raw_prompt_tokens(self, request: Request) -> int:
        framing = TOKENS_PER_MESSAGE * len(request.messages)
        counted = self._count(request.texts()) if self._count is not None else None
        if counted is None:
            return request.prompt_chars() // CHARS_PER_TOKEN + framing
        return counted + framing


class LineFit:
    """What the provider counts for a raw estimate: `counted = slope * raw + offset`, fitted by least squares on
    what answers reported. A ratio alone cannot learn an offset (framing tokens counted per request, or not at
    all), and then over-estimates short prompts and under-estimates long ones: with prompts of mixed lengths, a
    token limit was held 3% below what it allows. Until the raw estimates spread enough to fit a line, the ratio
    of the sums serves."""

    __slots__ = ("n", "sx", "sxx", "sxy", "sy")

    FEWEST = 8
    SPREAD = 0.05
    """The fit needs raw estimates that differ by this share of their mean (as a standard deviation)."""

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sy = self.sxx = self.sxy = 0.0

    def add(self, raw: int, counted: int) -> None:
        self.n += 1
        self.sx += raw
        self.sy += counted
        self.sxx += raw * raw
        self.sxy += raw * counted

    def predict(self, raw: int) -> int:
        n, sx = self.n, self.sx
        if n == 0 or sx <= 0:
            return raw
        mean = sx / n
        spread = self.sxx / n - mean * mean
        if n >= self.FEWEST and spread > (self.SPREAD * mean) ** 2:
            slope = (self.sxy / n - mean * self.sy / n) / spread
            if slope > 0:
                return max(1, math.ceil(slope * raw + (self.sy / n - slope * mean)))
        return math.ceil(raw * self.sy / sx)


def tiktoken_counter(model: str) -> Callable[[Iterable[str]], int | None] | None:
    """tiktoken's exact count for an OpenAI model's texts, if tiktoken is installed (None: estimate instead)."""
    name = model.rsplit("/", 1)[-1]
    if not name.startswith(_OPENAI_FAMILIES) or importlib.util.find_spec("tiktoken") is None:
        return None  # importing tiktoken costs 20 ms; it knows no other models
    import tiktoken

    try:
        return _TiktokenCount(tiktoken.encoding_name_for_model(name))
    except KeyError:
        return None  # not an OpenAI model


class _TiktokenCount:
    """Loads its encoding at the first count, not at start-up (it takes a tenth of a second).

    tiktoken downloads an encoding at first use; with no network that fails, and the character estimate
    serves instead (this returns None). LiteLLM ships the common encodings: its copy is used if no other is.
    """

    def __init__(self, encoding_name: str) -> None:
        self._encoding_name = encoding_name
        self._encode: Callable[[str], list[int]] | None = None
        self._unavailable = False

    def __call__(self, texts: Iterable[str]) -> int | None:
        if self._encode is None:
            if self._unavailable:
                return None
            try:
                import tiktoken

                _use_litellm_encodings()
                self._encode = tiktoken.get_encoding(self._encoding_name).encode_ordinary
            except Exception:  # no network and no cached copy
                self._unavailable = True
                return None
        encode = self._encode
        return sum(len(encode(text)) for text in texts)


def _use_litellm_encodings() -> None:
    if "TIKTOKEN_CACHE_DIR" in os.environ or "DATA_GYM_CACHE_DIR" in os.environ:
        return
    bundled = litellm_file("litellm_core_utils", "tokenizers")
    if bundled is not None:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
