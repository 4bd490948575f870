"""Process bookkeeping so a federation leaves nothing running behind it (Linux ``/proc``).

Ray (simulation engine) and Flower's deployment runtime start helper processes
(gcs_server, raylet, ``ray::ClientAppActor`` workers, flower-superexec,
flwr-serverapp/clientapp). After a run they exit on their own, but not at once: Ray
workers re-parent to init and can linger for many seconds on a loaded machine.
:class:`ChildWatch` records every descendant of this process (pid + start time, so a
recycled pid is never mistaken for ours) while a run goes on; :meth:`ChildWatch.reap`
then waits for them and terminates, by pid, those still alive. Elsewhere than Linux
these are no-ops.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

_PROC = Path("/proc")


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time in clock ticks) of ``pid``, or None if it is gone."""
    try:
        rest = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[1]), rest[0], int(rest[19])


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of ``pid``: {pid: start time}."""
    if not _PROC.is_dir():
        return {}
    children: dict[int, list[tuple[int, int]]] = {}
    for d in _PROC.iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st is not None:
                children.setdefault(st[0], []).append((int(d.name), st[2]))
    out: dict[int, int] = {}
    todo = [pid]
    while todo:
        for c, start in children.get(todo.pop(), []):
            if c not in out:
                out[c] = start
                todo.append(c)
    return out


def alive(pid: int, start: int | None = None) -> bool:
    """``pid`` runs (not a zombie) and, if ``start`` is given, is the same process."""
    st = _stat(pid)
    return st is not None and st[1] != "Z" and (start is None or st[2] == start)


class ChildWatch:
    """Record this process's descendants every ``interval`` seconds while in the ``with`` block."""

    def __init__(self, interval: float = 0.5, root: int | None = None):
        self.root = root or os.getpid()
        self.interval = interval
        self.seen: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            self.seen.update(descendants(self.root))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "ChildWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join()
        self.seen.update(descendants(self.root))
        return False

    def left(self) -> list[int]:
        return [p for p, s in self.seen.items() if alive(p, s)]

    def reap(self, grace: float = 2.0, wait: float = 10.0) -> list[int]:
        """Wait ``grace`` s for the recorded processes to exit, SIGTERM the rest, then
        SIGKILL after ``wait`` s. Returns the pids that had to be signalled."""
        deadline = time.monotonic() + grace
        while self.left() and time.monotonic() < deadline:
            time.sleep(0.2)
        signalled = self.left()
        for sig, delay in ((signal.SIGTERM, wait), (signal.SIGKILL, 5.0)):
            for p in self.left():
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + delay
            while self.left() and time.monotonic() < deadline:
                time.sleep(0.2)
        return signalled
