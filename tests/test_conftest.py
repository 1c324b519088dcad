"""The test harness itself: a fake provider that hangs at start-up is timed out and killed, not waited on."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import conftest
import pytest


def test_a_fake_server_that_hangs_at_start_up_is_killed_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python imports sitecustomize from PYTHONPATH at start-up: this one hangs the server before it listens.
    pid_file = tmp_path / "pid"
    (tmp_path / "sitecustomize.py").write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(3600)\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    monkeypatch.setattr(conftest, "STARTUP_TIMEOUT_S", 1.0, raising=False)
    failures: list[BaseException] = []

    def start() -> None:
        try:
            conftest.start_fake_server()
        except BaseException as error:
            failures.append(error)

    starting = threading.Thread(target=start, daemon=True)
    starting.start()
    starting.join(timeout=30)
    hung = starting.is_alive()
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    if hung and pid is not None:
        os.kill(pid, signal.SIGKILL)  # what the harness should have done
    assert not hung, "start_fake_server waited 30 s on a server that never said it listens"
    assert pid is not None and len(failures) == 1
    assert isinstance(failures[0], RuntimeError) and f"pid {pid}" in str(failures[0]), failures[0]
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)
