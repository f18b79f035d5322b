"""The build lock: one builder per index directory at a time.

``.NAME.lock`` beside ``index/NAME`` is held with a kernel lock
(``fcntl.flock``) for the whole build, so it is released by the kernel however
its holder ends (exit, crash, SIGKILL): a lock nobody holds never blocks a
build, whatever became of the dead builder's pid. The file also holds the
holder's pid, for the message a refused build prints, and is removed on
release. ``python -m pipeline.bm25`` takes the same lock, so it never writes
into an index being built.

A lock file that nobody holds but that names a live process is honoured only
when that process started before the file was written: that is a build by an
openbook from before the kernel lock, which only wrote its pid. A live pid
whose process started after the file was written was reused after its
builder died, so the lock is stale and taken over, as is one whose process is
gone (a warning names the dead builder's pid).

Example::

    >>> lock = BuildLock(Path("index/demo"))      # doctest: +SKIP
    >>> lock.acquire(); lock.path.read_text()      # doctest: +SKIP
    '12345'
    >>> lock.release()                              # doctest: +SKIP
"""

from __future__ import annotations

import errno
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.errors import OpenbookError

try:
    import fcntl
except ImportError:  # not POSIX: the pid rule alone
    fcntl = None

log = logging.getLogger(__name__)

#: A process that started up to this long after the lock file was written still counts as its
#: writer: process start times from ``/proc`` are only as exact as the boot time (whole seconds).
START_SLACK = 2.0
#: Lock files held by this process (absolute path -> pid), so a caller can tell it already holds one.
_HELD: dict[str, int] = {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or ``None`` if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    try:
        import psutil
    except ImportError:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except Exception:  # psutil.Error: gone, no access
        return None


def _flock(fd: int, path: Path) -> bool:
    """Take the kernel lock of ``fd`` without waiting: ``False`` if another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:  # a filesystem without locks: the pid rule alone
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        log.debug("no kernel lock on %s (%s): relying on the pid it holds", path, e.strerror)
    return True


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip() or 0)
    except (OSError, ValueError, UnicodeDecodeError):
        return 0


class BuildLock:
    """``.NAME.lock`` beside an index: one build per output directory at a time."""

    def __init__(self, out: Path):
        self.path = Path(out).with_name(f".{Path(out).name}.lock")
        self.held = False
        self._fd: int | None = None

    @property
    def _key(self) -> str:
        return os.path.abspath(self.path)

    def held_by_this_process(self) -> bool:
        """Whether a :class:`BuildLock` of this process holds this lock now."""
        return _HELD.get(self._key) == os.getpid()

    def _busy(self, pid: int) -> OpenbookError:
        out = self.path.parent / self.path.name[1:-5]
        if pid == os.getpid():
            return OpenbookError(f"--out {out} is already being built by this process (pid {pid})")
        who = f" (pid {pid})" if pid else ""
        return OpenbookError(f"--out {out} is being built by another process{who}; wait for it to "
                             "finish or stop it, or choose another --out")

    def _wait_for_pid(self, fd: int) -> int:
        """The holder's pid (it writes it right after taking the lock: wait a moment for it)."""
        for _ in range(20):
            pid = _read_pid(fd)
            if pid:
                return pid
            time.sleep(0.05)
        return 0

    def acquire(self) -> None:
        """Take the lock or raise :class:`OpenbookError` naming the builder that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not _flock(fd, self.path):
                    raise self._busy(self._wait_for_pid(fd))
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if not same:  # its holder removed it on release while we opened it: again
                    os.close(fd)
                    continue
                pid = _read_pid(fd)
                if pid and pid != os.getpid():
                    alive = _alive(pid)
                    started = process_start_time(pid) if alive else None
                    if alive and (started is None or started <= os.fstat(fd).st_mtime + START_SLACK):
                        raise self._busy(pid)  # a builder that writes its pid only
                    log.warning("taking over the stale build lock %s (its builder, pid %d, is "
                                "gone%s)", self.path, pid,
                                "; that pid is now another, younger process" if started else "")
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd, self.held = fd, True
            _HELD[self._key] = os.getpid()
            return
        raise OpenbookError(f"cannot take the build lock {self.path}; remove it if no build runs")

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Hold the lock for a ``with`` block; if this process holds it already (``build_index``
        adding its BM25 or sentence vectors), keep it and release nothing."""
        if self.held_by_this_process():
            yield
            return
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Remove the lock file and drop the kernel lock (a build waiting on the old file
        sees that it was removed and takes a new one)."""
        if not self.held:
            return
        _HELD.pop(self._key, None)
        self.held = False
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            if fd is not None:
                os.close(fd)
