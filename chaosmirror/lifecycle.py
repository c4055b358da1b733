"""One run's life: a stop flag, the signals that set it, what to do when it is set, and leftovers.

    with Run() as run:
        run.on_stop(engine.abort)            # kill running children, close connections
        ... workers check run.stopped before each task, and wait with run.wait(seconds) ...
    sys.exit(run.exit_code)                  # 130 / 143 / 129 when a signal stopped it

The first SIGINT, SIGTERM or SIGHUP sets the flag and runs the stop hooks at once; the run then
winds down (workers finish what the hooks cut short, the report is written). A second signal ends
the process at once, after the hooks ran again.

The signals are acted on by a thread of their own, woken through `signal.set_wakeup_fd`, not by
the Python-level handler: that one runs only in the main thread, between two bytecodes, and a
signal the kernel hands to another thread (it may, when the main thread already has one pending)
leaves a main thread blocked on a lock, waiting for the copies, asleep until some copy ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from chaosmirror.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_CURRENT: list[Run] = []  # the runs entered, innermost last
NAMES: dict[int, str] = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


class Run:
    """The stop flag and signal handling of one command; usable without signals (in threads, tests)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.signal: int | None = None
        self._hooks: list[Callable[[], None]] = []
        self._old: dict[int, object] = {}
        self._signalled = False
        self._wakeup: tuple[int, int] | None = None  # the pipe the C-level handler writes signal numbers to
        self._old_wakeup = -1
        self._watcher: threading.Thread | None = None

    # --- the flag -----------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def check(self) -> None:
        """Raise Interrupted if the run was stopped."""
        if self._stop.is_set():
            raise self.interrupted()

    def interrupted(self) -> Interrupted:
        """The exception that says this run was stopped, with its exit code."""
        return Interrupted(self.reason, exit_code=self.exit_code)

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if the run was stopped meanwhile (the sleep ends at once)."""
        return self._stop.wait(max(0.0, seconds))

    @property
    def reason(self) -> str:
        name = NAMES.get(self.signal, f"signal {self.signal}") if self.signal else "the run"
        return f"interrupted by {name}" if self.signal else "interrupted"

    @property
    def exit_code(self) -> int:
        return 128 + self.signal if self.signal else Interrupted.exit_code

    def stop(self, signum: int | None = None) -> None:
        """Set the flag and run every stop hook (each at most once per call, errors ignored)."""
        if signum is not None and self.signal is None:
            self.signal = signum
        self._stop.set()
        for hook in list(self._hooks):
            with contextlib.suppress(Exception):
                hook()

    def on_stop(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run `hook` when the run stops (at once if it already has); returns a function removing it."""
        self._hooks.append(hook)
        if self.stopped:
            with contextlib.suppress(Exception):
                hook()

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._hooks.remove(hook)

        return remove

    # --- signals --------------------------------------------------------------------------------

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """The Python-level handler does nothing: it only replaces the default action (exit, or a
        KeyboardInterrupt); `_watch` acts on the signal, whichever thread the kernel handed it to."""

    def _watch(self, fd: int) -> None:
        try:
            while data := os.read(fd, 64):  # b"" once __exit__ closed the other end
                for signum in data:
                    if signum in SIGNALS:
                        self._signal(signum)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _signal(self, signum: int) -> None:
        if self._signalled or self._stop.is_set():  # the second signal: do not wait for anything any more
            self.stop(signum)
            os._exit(128 + signum)
        self._signalled = True
        # On a thread of its own, so that a second signal is seen while the hooks run.
        threading.Thread(target=self.stop, args=(signum,), name="stop", daemon=True).start()

    @staticmethod
    def current() -> Run | None:
        """The run a command entered (`with Run()`), for the sessions it opens."""
        return _CURRENT[-1] if _CURRENT else None

    def __enter__(self) -> Run:
        if threading.current_thread() is threading.main_thread():
            read, write = os.pipe()
            os.set_blocking(write, False)  # the C-level handler must never block
            self._wakeup = (read, write)
            self._old_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
            self._watcher = threading.Thread(target=self._watch, args=(read,), name="signals", daemon=True)
            self._watcher.start()
            for signum in SIGNALS:
                self._old[signum] = signal.signal(signum, self._handle)
        _CURRENT.append(self)
        remove_leftovers()
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)  # type: ignore[arg-type]
        self._old.clear()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            os.close(self._wakeup[1])  # the watcher reads the end of the pipe, and ends
            self._wakeup = None
            if self._watcher is not None:
                self._watcher.join(timeout=1)  # so that the process can end at once (cli._exit)
                self._watcher = None
        if self in _CURRENT:
            _CURRENT.remove(self)


# --- temporary files that carry the PID of their run ---------------------------------------------

PREFIX = "chaosmirror-"


def private_dir(kind: str) -> Path:
    """A new 0700 folder in TMPDIR named after this process, so a later run can tell it is stale."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{os.getpid()}-"))


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (this one included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _pid_of(name: str) -> int | None:
    parts = name.split("-")
    for part in parts[2:3]:  # chaosmirror-KIND-PID-random
        if part.isdigit():
            return int(part)
    return None


def stale(folder: Path, prefix: str = PREFIX) -> Iterator[Path]:
    """Entries of `folder` starting with `prefix` whose run (the PID in the name) is gone."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid = _pid_of(entry.name)
        if pid is not None and pid != os.getpid() and not alive(pid):
            yield entry


def remove_leftovers(folder: Path | None = None) -> list[Path]:
    """Remove what killed runs left in TMPDIR (they hold no secrets, but they hold space)."""
    removed = []
    root = folder or Path(tempfile.gettempdir())
    for entry in stale(root):
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    return removed


def backoff(attempt: int, *, first: float = 0.5, cap: float = 30.0, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based): exponential with full jitter, never
    sooner than the server's Retry-After."""
    import random

    ceiling = min(cap, first * (2**attempt))
    wait = random.uniform(ceiling / 2, ceiling)
    return max(wait, retry_after or 0.0)


def monotonic() -> float:
    return time.monotonic()
