"""Output: one JSON line per result, written whole and flushed as soon as the result is known."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO

from llmgather.types import Result


class ResultWriter:
    """Appends results to a JSONL file (or standard output). A crash loses at most what was in flight."""

    def __init__(self, path: Path | None, *, append: bool = False) -> None:
        self.path = path
        mode = "a" if append else "w"
        self._file: IO[str] = path.open(mode, encoding="utf-8") if path is not None else sys.stdout
        self.written = 0

    def write(self, result: Result) -> None:
        # One write call per line, so that a line is never interleaved or left half-written by us.
        self._file.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        if self._file is not sys.stdout:
            self._file.close()
        else:
            self._file.flush()
