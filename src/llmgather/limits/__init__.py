"""Admission control: how many requests and tokens may go out, and when."""

from llmgather.limits.bucket import TokenBucket
from llmgather.limits.pace import Cost
from llmgather.limits.queue import Limiter, LimiterStats, Limits, Ticket
from llmgather.limits.tokens import TokenEstimator

__all__ = ["Cost", "Limiter", "LimiterStats", "Limits", "Ticket", "TokenBucket", "TokenEstimator"]
