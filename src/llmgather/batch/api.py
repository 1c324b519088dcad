"""What the batch lane asks of a provider's batch API, whichever provider it is.

A batch is a file of request lines: `encode` turns one request into its line (so the lane can size a part in
bytes before it sends anything), `submit` sends the lines and creates the batch, tagged so that a batch created
just before a crash can be found again (`find`), `status` reads where it is, `results` reads what it answered,
and `cancel` asks the provider to stop it. Nothing here retries, waits or knows of the journal: the lane does.

The provider's own states are mapped onto four the lane acts on, and the view shows:
validating -> in_progress -> finalizing -> ended (`ended_as` says how: completed, failed, expired, cancelled).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llmgather.errors import RequestError
from llmgather.types import Request, Response


class BatchState(enum.StrEnum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    """OpenAI's last step, writing the results; Anthropic's `canceling` maps here too."""
    ENDED = "ended"


class EndedAs(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    """Refused as a whole: validation, or OpenAI's enqueued-token limit (`errors` says which)."""
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class BatchProblem:
    """One of the reasons a provider gives for failing a whole batch (OpenAI's `errors.data`)."""

    code: str
    message: str
    line: int | None = None
    """1-based line of the batch file it names, when it names one."""


@dataclass(frozen=True, slots=True)
class BatchStatus:
    id: str
    state: BatchState
    ended_as: EndedAs | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    """Requests answered with an error so far (OpenAI's `failed`, Anthropic's `errored`)."""
    problems: tuple[BatchProblem, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: float | None = None
    """Unix time, as the provider says."""

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def over_token_limit(self) -> bool:
        """Refused because the account's enqueued tokens are spent: the part waits for earlier batches."""
        return self.ended_as is EndedAs.FAILED and any(p.code == "token_limit_exceeded" for p in self.problems)


@dataclass(slots=True)
class BatchItem:
    """One request's outcome in a batch: an answer, an error classified as online errors are, or neither
    (`unanswered`: it expired or was cancelled with its batch, so it goes again)."""

    custom_id: str
    response: Response | None = None
    error: RequestError | None = None

    @property
    def unanswered(self) -> bool:
        return self.response is None and self.error is None


class BatchApi(Protocol):
    model: str
    endpoint: str
    """What the output and the cache know the endpoint as (the same as the online backend's)."""
    max_requests: int
    """The provider's cap on one batch's requests (OpenAI 50,000, Anthropic 100,000)."""
    max_bytes: int
    """The provider's cap on one batch's size (OpenAI's file 200 MB, Anthropic's batch 256 MB)."""
    keeps_tags: bool
    """Whether a batch keeps the tags it was created with (OpenAI's metadata; Anthropic keeps none), so that
    `find` tells this run's batches apart from any other's."""

    def encode(self, custom_id: str, request: Request) -> bytes:
        """The request as one line of the batch (its length counts against `max_bytes`)."""
        ...

    async def submit(self, lines: Sequence[bytes], tags: Mapping[str, str]) -> str:
        """Send the lines and create the batch, tagged with `tags` where the API keeps them; its id.
        Raises a classified `RequestError` when the provider refuses."""
        ...

    async def status(self, batch_id: str) -> BatchStatus: ...

    def results(self, batch_id: str) -> AsyncIterator[BatchItem]:
        """Every request of an ended batch, answered or not."""
        ...

    async def cancel(self, batch_id: str) -> None: ...

    async def find(self, tags: Mapping[str, str], since: float) -> list[BatchStatus]:
        """Batches created at or after `since` (Unix time) that carry every one of `tags`: how a batch created
        just before a crash, and never journaled, is found again. Where the API keeps no tags (Anthropic),
        every batch created since then is returned, and the lane matches what it can."""
        ...

    async def aclose(self) -> None: ...
