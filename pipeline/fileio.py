"""Atomic file and folder writes, output pre-checks and checksums: the one home for each.

Every artifact openbook writes (an index, a reader, a report, a submission, a
model folder) reaches its final name by a rename, so a reader of the path sees
the old version or the new one, never half of either:

* :func:`write_json_atomic` / :func:`write_text_atomic`: temp file beside the
  target, fsync, rename;
* :func:`write_files_atomic`: several files all or none (a submission and its
  report);
* :func:`publish_dir`: a complete temp folder renamed onto a folder, the old
  one removed only after the new one is in place;
* :func:`check_output_dir`: the refusal to replace a non-empty folder without
  ``--overwrite``, run before any work is done;
* :func:`sha256_file`: streamed sha256 of a file.

Example::

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_json_atomic(d / "meta.json", {"dim": 384})
    >>> (d / "meta.json").read_text()
    '{\\n  "dim": 384\\n}\\n'
    >>> len(sha256_file(d / "meta.json"))
    64
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

from pipeline.errors import OpenbookError

CHUNK = 1 << 20  # bytes per read when hashing


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK, *, progress: bool = False) -> str:
    """The hex sha256 of a file, read ``chunk`` bytes at a time (``progress``: a tqdm bar)."""
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    path = Path(path)
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc=f"sha256 {path.name}", disable=not progress,
                                     dynamic_ncols=True) as bar:
        while block := f.read(chunk):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def write_json_atomic(path: str | os.PathLike, obj, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON (UTF-8, trailing newline) to a temp file beside ``path``,
    fsync it, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_error(path: Path, flag: str, e: OSError) -> OpenbookError:
    return OpenbookError(
        f"{flag} {path}: cannot write it ({e.strerror or e}); free some disk space or choose "
        f"another {flag}. Nothing was replaced: the previous file, if any, is untouched")


def write_files_atomic(files: Sequence[tuple[Path, str, str]]) -> None:
    """Write ``(path, text, flag)`` files all or none: each goes to a temp file in its own
    folder first, and only when every one is written are they renamed into place. On a
    failure (disk full ...) the temp files are removed and the old files stay as they were;
    the error names the file and its ``flag``."""
    done: list[tuple[Path, Path]] = []
    try:
        for path, text, flag in files:
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            done.append((tmp, path))
            try:
                with open(tmp, "w", encoding="utf-8", newline="") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise _write_error(path, flag, e) from e
        for (tmp, path), (_, _, flag) in zip(done, files):
            try:
                os.replace(tmp, path)
            except OSError as e:
                raise _write_error(path, flag, e) from e
    finally:
        for tmp, _ in done:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass


def write_text_atomic(path: str | os.PathLike, text: str, flag: str = "--out") -> None:
    """Write to a temp file in the same folder, then rename: never a half file."""
    write_files_atomic([(Path(path), text, flag)])


def publish_dir(partial: str | os.PathLike, out: str | os.PathLike) -> None:
    """Rename the complete folder ``partial`` onto ``out`` (same filesystem: atomic).

    An existing ``out`` is first renamed aside to ``.NAME.old-PID`` and removed only once
    the new folder is in place; if the second rename fails, the old folder is put back
    and the error is raised, so ``out`` is never left missing."""
    partial, out = Path(partial), Path(out)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if old.exists():
        shutil.rmtree(old)
    moved = False
    if out.exists() or out.is_symlink():
        os.replace(out, old)
        moved = True
    try:
        os.replace(partial, out)
    except OSError:
        if moved:
            os.replace(old, out)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)


def write_dir_atomic(target: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a fresh temp folder beside ``target``, then :func:`publish_dir`
    it onto ``target``: never a half-written folder under ``target``."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, target)


def check_output_dir(out: str | os.PathLike, overwrite: bool, *, is_file: str, not_empty: str,
                     ours: Callable[[Path], bool] | None = None, not_ours: str | None = None) -> None:
    """Refuse, before any work, an ``out`` folder that must not be replaced.

    The order of the checks is the same for every command; the wording is the caller's:

    * ``out`` is a file: :class:`~pipeline.errors.OpenbookError` with ``is_file``;
    * ``out`` is a non-empty folder and not ``overwrite``: ``not_empty``;
    * ``overwrite`` given but ``ours(out)`` is false (the folder is not this command's
      artifact, e.g. a folder of the user's files): ``not_ours``. ``--overwrite`` only
      ever replaces what the same command wrote.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OpenbookError(is_file)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OpenbookError(not_empty)
        if ours is not None and not ours(out):
            raise OpenbookError(not_ours or f"{out} is not a folder this command wrote; "
                                            "choose another --out")


def check_parent_writable(path: str | os.PathLike, flag: str = "--out") -> None:
    """Create ``path``'s parent folder if needed and refuse one that cannot be written."""
    path = Path(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OpenbookError(f"{flag} {path}: cannot create folder {parent} ({e.strerror}); "
                            f"choose another {flag}") from e
    if not os.access(parent, os.W_OK):
        raise OpenbookError(f"{flag} {path}: folder {parent} is not writable; choose another {flag}")
