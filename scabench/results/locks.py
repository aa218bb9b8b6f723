"""An exclusive file lock (``fcntl.flock``) whose holder says who it is."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scabench.results.files import BrokenResult, read_json


def now() -> str:
    """Local time with its UTC offset, to the second (what records and locks store)."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


class LockBusy(RuntimeError):
    """Another process holds the lock; ``holder`` is what it wrote into the lock file."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path, self.holder = path, holder
        since = f" since {holder['since']}" if holder.get("since") else ""
        super().__init__(f"{path} is held by pid {holder.get('pid', '?')} on {holder.get('host', '?')}{since}")


class FileLock:
    """An exclusive ``fcntl.flock`` on a file, released when closed or when the process dies.

    The holder writes its pid, host and start time (and ``info``) into the file for others to read.
    """

    def __init__(self, path: str | Path, info: dict[str, Any] | None = None):
        self.path, self.info = Path(path), info or {}
        self._fd: int | None = None

    def acquire(self, timeout: float = 0.0, poll: float = 0.1) -> "FileLock":
        """Take the lock, waiting up to ``timeout`` seconds; :class:`LockBusy` if it stays held."""
        deadline = time.monotonic() + timeout
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockBusy(self.path, lock_holder(self.path)) from None
                time.sleep(poll)
        self._fd = fd
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": now(), **self.info}
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "FileLock":
        """``with FileLock(path):`` takes the lock; ``with folder.lock():`` (already taken) keeps it."""
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_holder(path: str | Path) -> dict[str, Any]:
    """What the holder of a lock wrote (empty if nothing readable)."""
    with contextlib.suppress(BrokenResult):
        return read_json(path) or {}
    return {}


def is_locked(path: str | Path) -> bool:
    """Whether some process holds the flock on ``path`` right now (informational: racy)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
