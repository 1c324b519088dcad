"""The output a run owns: locked for the whole run, never the input or the cache, written in whole lines.

    with OutputFile.open(path, resume=True, guard={"input": source, "cache": cache}) as output:
        ... output.state.skips(id, model) ... output.write(result) ...

`open` checks everything that can be checked before a request is sent, in an order that touches nothing
until it is sure: the combination of flags, the guard, the place (a folder that exists, not a folder
itself), then the lock, and only under the lock reads, repairs, empties or rewrites the file.

The lock is two `flock`s, both taken before the output is read. One is on a lock file beside the output
(`.NAME.lock`, holding the owner's pid for the message a second run gets): it stays one lock while a resume
replaces the output (an atomic rewrite changes its inode). The other is on the output's inode itself: it
keeps out a run that reaches the same file by another name (a hard link) or after the lock file was
deleted, and it moves to the new inode when the file is rewritten or created. `flock` dies with its
process, so a run killed with SIGKILL leaves a lock file that blocks nobody.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
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
            lock.hold(path)  # the file itself, before anything in it is read, emptied or rewritten
            state, fd = _prepare(path, lock, resume=resume, retry_failed=retry_failed, overwrite=overwrite, check=check)
        except BaseException:
            lock.release()
            raise
        try:
            lock.hold(fd)  # the file now written to: another inode after a rewrite, or a new file
            if not resume:
                os.ftruncate(fd, 0)  # only now: every refusal above left it as it was
            return cls(path, state, LineWriter(fd, str(path)), lock)
        except BaseException as exc:
            os.close(fd)
            lock.release()
            if isinstance(exc, OSError):
                raise InputError(f"{path}: cannot write it ({exc.strerror or exc})") from None
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
    path: Path,
    lock: OutputLock,
    *,
    resume: bool,
    retry_failed: bool,
    overwrite: bool,
    check: Callable[[ResumeState], object] | None,
) -> tuple[ResumeState, int]:
    """Under the lock: read, check and repair (resume), or refuse; then open for appending (not emptied yet)."""
    # A symlink's target is what is rewritten, so that the link stays a link.
    target = path.resolve() if path.is_symlink() else path
    try:
        if resume:
            state = prepare_resume(target, retry_failed=retry_failed, repair=False)
            state.path = path
            if check is not None:
                check(state)
            lock.hold(target)  # a file that appeared since `open` held the place is locked before it is rewritten
            repair_output(target, state)
        else:
            check_fresh(target, overwrite=overwrite)
            state = ResumeState(path=path)
        return state, _open_append(target)
    except OSError as exc:
        raise InputError(f"{path}: cannot {'resume' if resume else 'write'} it ({exc.strerror or exc})") from None


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
    """Exclusive, non-blocking `flock`s on `.NAME.lock` beside the output and on the output's inode, for as
    long as a run lasts."""

    __slots__ = ("_fd", "_held", "path")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self._held: int | None = None
        """A descriptor of the output's inode, holding the flock on it (None until there is a file)."""

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

    def hold(self, output: Path | int) -> None:
        """Lock the output's inode too: the one at `output` (a path: nothing if no regular file is there yet), or
        the one a descriptor of it is open on. One inode is held at a time; another one moves the lock to it.

        Raises InputError if another process holds it: a run writing to it under another name, or one whose
        lock file was deleted."""
        fd = _open_inode(output)
        if fd is None:
            return
        if self._held is not None and _inode(fd) == _inode(self._held):
            os.close(fd)  # held already: a second flock of ours, on another open of it, would refuse ourselves
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                name = output if isinstance(output, Path) else self.path
                raise InputError(
                    f"{name} is in use: another process holds it (under another name, or its lock file "
                    "was deleted): wait for it to end, or give -o another file"
                ) from None
            return  # a file system without flock (on a read-only descriptor): the lock file still guards
        old, self._held = self._held, fd
        if old is not None:
            os.close(old)

    def release(self) -> None:
        """Unlock the output's inode; remove the lock file (while still holding it, so no one locks the removed
        file) and unlock it. Idempotent."""
        held, self._held = self._held, None
        if held is not None:
            os.close(held)
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


def _open_inode(output: Path | int) -> int | None:
    """A new open file description of the output's inode, for flock alone (it reads and writes nothing), or
    None if there is no regular file. A descriptor is duplicated: the lock is then the writer's own."""
    if isinstance(output, int):
        return os.dup(output)
    fd = None
    for mode in (os.O_RDONLY, os.O_WRONLY):  # an output may be writable only; neither mode empties it
        try:
            fd = os.open(output, mode | os.O_NONBLOCK | os.O_CLOEXEC)  # O_NONBLOCK: a FIFO must not block here
            break
        except FileNotFoundError:
            return None
        except OSError as exc:
            error = exc
    if fd is None:
        raise InputError(f"{output}: cannot open it ({error.strerror or error})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _inode(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


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
