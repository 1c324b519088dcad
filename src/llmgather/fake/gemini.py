"""Google's quota errors as its OpenAI-compatible endpoint sends them: a JSON array of one error."""

from __future__ import annotations

from typing import Any

_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
_DOCS = "https://ai.google.dev/gemini-api/docs/rate-limits"
QUOTA_IDS = {
    "day": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    "minute": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
}


def quota_body(per: str, quota_value: int, model: str, retry_delay_s: float | None = None) -> list[dict[str, Any]]:
    """The 429 body of an exhausted per-day or per-minute quota; a RetryInfo detail when a delay is given."""
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more information on "
        f"this error, head to: {_DOCS}. To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit."
        f"\n* Quota exceeded for metric: {_METRIC}, limit: {quota_value}, model: {model or 'gemini-2.5-flash'}"
    )
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": _METRIC,
                    "quotaId": QUOTA_IDS[per],
                    "quotaDimensions": {"location": "global", "model": model or "gemini-2.5-flash"},
                    "quotaValue": str(quota_value),
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{"description": "Learn more about Gemini API quotas", "url": _DOCS}],
        },
    ]
    if retry_delay_s is not None:
        message += f"\nPlease retry in {retry_delay_s:g}s."
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_delay_s:g}s"})
    return [{"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": details}}]
