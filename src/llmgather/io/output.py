"""The output a run owns: locked for the whole run, never the input or the cache, written in whole lines.

    with OutputFile.open(path, resume=True, guard={"input": source, "cache": cache}) as output:
        ... output.state.skips(id, model) ... output.write(result) ...

`open` checks everything that can be checked before a request is sent, in an order that touches nothing
until it is sure: the combination of flags, the guard, the place (a folder that exists, not a folder
itself), then the lock, and only under the lock reads, repairs, empties or rewrites the file.

The lock is `flock` on a lock file beside the output (`.NAME.lock`, holding the owner's pid for the message
a second run gets), not on the output itself: a resume replaces the output (an atomic rewrite changes its
inode), and a lock on the old inode would no longer keep anyone out. `flock` dies with its process, so a
run killed with SIGKILL leaves a lock file that blocks nobody.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from llmgather.errors import InputError
from llmgather.io.resume import ResumeState, check_fresh, prepare_resume, repair_output
from llmgather.io.writer import LineWriter
from llmgather.types import Result

_STDOUT = "<stdout>"


class OutputFile:
    """Where a run's results go: a file it holds the lock on, or standard output (`path` None)."""

    __slots__ = ("_lock", "_writer", "path", "state")

    def __init__(self, path: Path | None, state: ResumeState, writer: LineWriter, lock: OutputLock | None) -> None:
        self.path = path
        self.state = state
        """What an earlier run did (empty without resume)."""
        self._writer = writer
        self._lock = lock

    @classmethod
    def open(
        cls,
        path: Path | None,
        *,
        resume: bool = False,
        retry_failed: bool = False,
        overwrite: bool = False,
        guard: Mapping[str, str | os.PathLike[str] | None] = {},
        check: Callable[[ResumeState], object] | None = None,
    ) -> OutputFile:
        """Take `path` for this run: continue it (`resume`), replace it (`overwrite`), or start it new.

        `guard` names files the output must not be ({"input": ..., "cache": ...}). `check` is given what an
        earlier run did, under the lock and before the file is repaired: what it raises leaves the file as it
        was (a resume refused because the input changed). Raises InputError, with nothing touched, for
        anything a person must fix first."""
        if resume and overwrite:
            raise InputError("--resume continues the output and --overwrite replaces it: choose one")
        if path is None:
            if resume:
                raise InputError("--resume needs the output file to continue: give it with -o")
            return cls(None, ResumeState(), LineWriter(None, _STDOUT), None)
        _check_guard(path, guard)
        _check_place(path)
        if path.exists() and not path.is_file():  # a device or a pipe (/dev/null): written as a stream
            if resume:
                raise InputError(f"{path} is not a regular file, so there is nothing to resume in it")
            return cls(path, ResumeState(), LineWriter(_open_append(path), str(path)), None)
        lock = OutputLock.take(path)
        try:
            prepared = _prepare(path, resume=resume, retry_failed=retry_failed, overwrite=overwrite, check=check)
            return cls(path, *prepared, lock)
        except BaseException:
            lock.release()
            raise

    @property
    def written(self) -> int:
        """Results written by this run."""
        return self._writer.written

    def write(self, result: Result) -> None:
        """Append one result as a whole line; OutputError (naming the file) if it cannot be, the file whole."""
        self._writer.write(result)

    def close(self) -> None:
        """Flush to disk, close, release the lock. Idempotent."""
        try:
            self._writer.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OutputFile({str(self.path) if self.path else _STDOUT!r}, written={self.written})"


def _prepare(
    path: Path, *, resume: bool, retry_failed: bool, overwrite: bool, check: Callable[[ResumeState], object] | None
) -> tuple[ResumeState, LineWriter]:
    """Under the lock: read, check and repair (resume), or refuse or empty; then open for appending."""
    # A symlink's target is what is rewritten, so that the link stays a link.
    target = path.resolve() if path.is_symlink() else path
    try:
        if resume:
            state = prepare_resume(target, retry_failed=retry_failed, repair=False)
            state.path = path
            if check is not None:
                check(state)
            repair_output(target, state)
        else:
            check_fresh(target, overwrite=overwrite)
            state = ResumeState(path=path)
        fd = _open_append(target)
    except OSError as exc:
        raise InputError(f"{path}: cannot {'resume' if resume else 'write'} it ({exc.strerror or exc})") from None
    try:
        if not resume:
            os.ftruncate(fd, 0)  # only now: every refusal above left it as it was
        return state, LineWriter(fd, str(path))
    except OSError as exc:
        os.close(fd)
        raise InputError(f"{path}: cannot write it ({exc.strerror or exc})") from None


def _open_append(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise InputError(f"{path}: cannot write it ({exc.strerror or exc})") from None


def _check_guard(path: Path, guard: Mapping[str, str | os.PathLike[str] | None]) -> None:
    for name, other in guard.items():
        if other is not None and "://" not in str(other) and _same_file(path, Path(other)):  # a URL is no file
            raise InputError(f"{path} is the {name} file too: the results would destroy it; give -o another file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


def _check_place(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{path} is a folder: give -o a file name")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise InputError(f"{path}: its folder {folder} {what}")


class OutputLock:
    """An exclusive, non-blocking `flock` on `.NAME.lock` beside the output, for as long as a run lasts."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def take(cls, output: Path) -> OutputLock:
        """Lock `output` or raise InputError naming the run that holds it. Every name of one file (a symlink,
        a relative path) shares one lock."""
        real = output.resolve()
        path = real.with_name(f".{real.name}.lock")
        for _ in range(16):  # bounded: each retry means a holder released the lock in between
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise InputError(f"{output}: cannot write in its folder {path.parent} ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise InputError(f"{output}: cannot lock it ({exc.strerror})") from None
                by = f"another llmgather run (pid {holder})" if holder else "another llmgather run"
                raise InputError(f"{output} is in use by {by}: wait for it to end, or give -o another file") from None
            if _is_at(fd, path):
                lock = cls(path, fd)
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())  # only for the message a second run gets
                except OSError as exc:
                    lock.release()
                    raise InputError(f"{output}: cannot write its lock file {path} ({exc.strerror})") from None
                return lock
            os.close(fd)  # we locked a file its holder had just removed: try the one there now
        raise InputError(f"{output}: could not lock it (its lock file {path} keeps changing)")

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one locks the removed file) and unlock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _is_at(fd, self.path):
                self.path.unlink()
        except OSError:
            pass  # a lock file left behind blocks no one: the lock is the flock, gone with the descriptor
        finally:
            os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
