"""Output lines: one JSON line per result, written whole with one system call as soon as the result is known.

A failed write (a full disk, a file too large, an I/O error, the output deleted) raises `OutputError` naming
the file, after cutting off whatever part of the line reached it: the file keeps whole lines only, so a
resume finishes the run. Standard output cannot be cut back; a closed pipe there is one `OutputError`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
from typing import IO

from llmgather.errors import OutputError
from llmgather.types import Result


class LineWriter:
    """Appends results to an open file descriptor it owns, or to standard output (which it never closes)."""

    __slots__ = ("_closed", "_failed", "_fd", "_owned", "_regular", "_stream", "name", "written")

    def __init__(self, fd: int | None, name: str) -> None:
        """`fd` opened for appending, or None for standard output. `name` is what errors call the output."""
        self.name = name
        self.written = 0
        self._failed: str | None = None
        """Why the output broke: every later write is refused with it, none tried again."""
        self._closed = False
        self._owned = fd is not None
        self._stream: IO[str] | None = None
        if fd is None:
            fd = _fileno(sys.stdout)
            if fd is None:
                self._stream = sys.stdout  # a stand-in (a notebook, a test's capture): through its own write()
            else:
                sys.stdout.flush()  # whatever was printed before comes before the results
        self._fd = fd
        self._regular = self._owned and fd is not None and stat.S_ISREG(os.fstat(fd).st_mode)

    def write(self, result: Result) -> None:
        if self._failed is not None:
            raise OutputError(self._failed, path=self.name)
        if self._closed:
            raise ValueError(f"{self.name}: written to after close()")
        line = json.dumps(result.to_dict(), ensure_ascii=False) + "\n"
        try:
            if self._fd is None:
                assert self._stream is not None
                self._stream.write(line)
                self._stream.flush()
            else:
                if self._regular and self.written % _CHECK_EVERY == 0:
                    _check_linked(self._fd)
                _write(self._fd, line.encode(), cut_back=self._regular)
        except OSError as exc:
            self._failed = self._failure(exc)
            raise OutputError(self._failed, path=self.name, cause=exc) from exc
        self.written += 1

    def _failure(self, exc: OSError) -> str:
        if isinstance(exc, BrokenPipeError) and not self._owned:
            _silence_stdout()
            return "standard output was closed (broken pipe)"
        whole = "; every line written before is whole" if self._regular else ""
        return f"could not write a result ({exc.strerror or exc}){whole}"

    def close(self) -> None:
        """Flush to disk and close (standard output is flushed, not closed). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._owned:
            try:
                (self._stream or sys.stdout).flush()
            except (OSError, ValueError):
                _silence_stdout()
            return
        assert self._fd is not None
        try:
            if self._regular and self._failed is None:
                _check_linked(self._fd)
                os.fsync(self._fd)  # "written" means on disk, not in the page cache of a machine that may lose power
        except OSError as exc:
            self._failed = f"could not flush the results to disk ({exc.strerror or exc})"
            raise OutputError(self._failed, path=self.name, cause=exc) from exc
        finally:
            os.close(self._fd)


_CHECK_EVERY = 64
"""Writes between checks that the output still has a name (a syscall each: not on every line)."""


def _check_linked(fd: int) -> None:
    if os.fstat(fd).st_nlink == 0:  # deleted, or its folder removed: what is written now vanishes at close
        raise FileNotFoundError(errno.ENOENT, "the output file was deleted (or its folder removed) mid-run")


def _write(fd: int, data: bytes, *, cut_back: bool) -> None:
    """Write all of `data`; if that fails, remove the part of it that reached the file (`cut_back`). Should
    cutting back fail too, the line is torn at the end of the file, and a resume cuts it off."""
    sent = 0
    try:
        sent = os.write(fd, data)
        while sent < len(data):  # a short count at a size limit or a full disk: the next call says why
            sent += os.write(fd, memoryview(data)[sent:])
    except OSError:
        if cut_back and sent:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, os.fstat(fd).st_size - sent)
        raise


def _fileno(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so that the interpreter's flush at exit does not report the broken pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass
