"""The one redaction every message that quotes a provider goes through before anyone sees it.

A provider's body is not ours to trust: a proxy or a lying server may echo the request's headers back,
and the message lands in the output file, on the terminal and in logs. So a quoted text loses the key
it was sent with, anything shaped like a key, and its tail past a bounded length.
"""

from __future__ import annotations

import re

MAX_QUOTE = 500
"""Characters of provider text kept in a message: enough to say what went wrong."""
_SCAN_LIMIT = 64 * 1024
"""A body longer than this is cut before the patterns run over it: an error path, not a parser."""
_MIN_SECRET = 4
"""A shorter 'key' would turn every message into confetti, and guards nothing."""
REDACTED = "[redacted]"

_SHAPED_LIKE_KEYS = re.compile(
    r"""
      \b(?P<bearer>Bearer\s+)[^\s"'<>,;]+                      # an Authorization value
    | \b(?:sk|rk|pk)[-_][A-Za-z0-9_\-]{8,}                     # OpenAI, Anthropic (sk-ant-), and alike
    | \b(?:gsk|hf|r8|xai|pplx|nvapi|csk)[-_][A-Za-z0-9_\-]{8,} # Groq, Hugging Face, Replicate, xAI, ...
    | \bAIza[A-Za-z0-9_\-]{20,}                                # Google API keys (Gemini)
    | \bAKIA[A-Z0-9]{12,}                                      # AWS access key ids (Bedrock)
    """,
    re.VERBOSE | re.IGNORECASE,
)
# `x-api-key: v`, `"api_key": "v"`, `Authorization: Basic v`, `?key=v`: the name stays, the value goes.
_NAMED_SECRET = re.compile(
    r"""(?P<name>\b(?:x-)?api[-_]?key|\bauthorization|\b(?:access|secret)[-_]?(?:key|token)|\bpassword|[?&]key)
        (?P<sep>["']?\s*[:=]\s*["']?)
        (?P<scheme>(?:Bearer|Basic|Token)\s+)?(?P<value>[^\s"'<>,;&}]+)""",
    re.VERBOSE | re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z0-9_\-+/=]{8,}")
# What a cut may leave of a key: the run of key characters it went through (matched on the reversed
# text, anchored, so it stays linear where `...*$` would backtrack over a long body).
_WORD_END = re.compile(r"[^\s\"'<>,;:=&{}()\[\]]*")


def redact(text: str, secret: str | None = None, *, limit: int = MAX_QUOTE) -> str:
    """`text` without `secret`, without key-shaped words, and at most about `limit` characters long."""
    text = _cut(text, _SCAN_LIMIT)
    if secret and len(secret) >= _MIN_SECRET:
        text = text.replace(secret, REDACTED)
        # A server that cut its own body may have cut the key too: a long piece of it goes as well.
        text = _WORD.sub(lambda m: REDACTED if m.group(0) in secret else m.group(0), text)
    text = _SHAPED_LIKE_KEYS.sub(lambda m: (m["bearer"] or "") + REDACTED, text)
    text = _NAMED_SECRET.sub(_named, text)
    return _cut(text, limit)


def _named(match: re.Match[str]) -> str:
    if match["value"] == REDACTED:
        return match.group(0)
    return f"{match['name']}{match['sep']}{match['scheme'] or ''}{REDACTED}"


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters; a word the cut went through goes whole, lest half a key survive."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    tail = _WORD_END.match(head[::-1])
    return head[: limit - tail.end()] + "…" if tail else head + "…"
