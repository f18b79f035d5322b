"""Atomic file and folder writes, output pre-checks and checksums: the one home for each.

Every artifact openbook writes (an index, a reader, a report, a submission, a
model folder) reaches its final name by a rename, so a reader of the path sees
the old version or the new one, never half of either:

* :func:`write_json_atomic` / :func:`write_text_atomic`: temp file beside the
  target, fsync, rename;
* :func:`write_files_atomic`: several files all or none (a submission and its
  report), without replacing any unless asked;
* :func:`check_output_file`: the refusal of an output file that exists (without
  ``--overwrite``), is an input of the run or another output, run before any work;
* :func:`publish_dir`: a complete temp folder renamed onto a folder, the old
  one removed only after the new one is in place;
* :func:`check_output_dir`: the refusal to replace a non-empty folder without
  ``--overwrite``, or one the command did not write even with it, run before any work;
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


NOTHING_REPLACED = ". Nothing was replaced: the previous file, if any, is untouched"


def _write_error(path: Path, flag: str, e: OSError) -> OpenbookError:
    return OpenbookError(
        f"{flag} {path}: cannot write it ({e.strerror or e}); free some disk space or choose "
        f"another {flag}{NOTHING_REPLACED}")


def _publish_new(tmp: Path, path: Path, flag: str) -> None:
    """Give ``tmp`` the name ``path`` only if ``path`` does not exist (a hard link, which
    never replaces; an exclusive create where hard links are not supported)."""
    taken = OpenbookError(f"{flag} {path} appeared while this run was working (another run "
                          f"wrote it?); nothing was replaced: pass --overwrite to replace it, "
                          f"or choose another {flag}")
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise taken from None
    except OSError:  # no hard links on this filesystem: claim the name, then rename onto it
        pass
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        raise taken from None
    os.replace(tmp, path)


def write_files_atomic(files: Sequence[tuple[Path, str, str]], *, overwrite: bool = True) -> None:
    """Write ``(path, text, flag)`` files all or none: each goes to a temp file in its own
    folder first, and only when every one is written are they put in place. On a failure
    (disk full, a name taken meanwhile ...) the temp files are removed and every file
    already put in place is put back as it was (the old one restored, a new one removed);
    the error names the file and its ``flag``.

    ``overwrite=False`` never replaces an existing file, even one that appeared while the
    caller was working (two runs to the same ``--out``): the second one fails cleanly."""
    paths = [Path(path).absolute() for path, _, _ in files]
    if len(set(map(os.path.realpath, paths))) != len(paths):
        raise OpenbookError("the output files must differ: " + ", ".join(
            f"{flag} {path}" for path, _, flag in files))
    tag = f"{os.getpid()}-{id(files)}"
    temps: list[Path] = []
    backups: list[Path] = []
    placed: list[tuple[Path, Path | None]] = []  # (path, backup of its previous content)
    try:
        for path, (_, text, flag) in zip(paths, files):
            tmp = path.with_name(f".{path.name}.tmp-{tag}")
            temps.append(tmp)
            try:
                with open(tmp, "w", encoding="utf-8", newline="") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise _write_error(path, flag, e) from e
        for tmp, path, (_, _, flag) in zip(temps, paths, files):
            try:
                if not overwrite:
                    _publish_new(tmp, path, flag)
                    placed.append((path, None))
                    continue
                backup = None
                if path.exists():
                    backup = path.with_name(f".{path.name}.old-{tag}")
                    try:  # the old content, to put back on a later failure
                        os.link(path, backup)
                    except OSError:  # no hard links here
                        shutil.copy2(path, backup)
                    backups.append(backup)
                os.replace(tmp, path)
                placed.append((path, backup))
            except OSError as e:
                raise _write_error(path, flag, e) from e
    except BaseException as exc:
        lost = []
        for path, backup in reversed(placed):
            try:
                os.replace(backup, path) if backup is not None else path.unlink()
            except OSError:
                lost.append(str(path))
        if lost and isinstance(exc, OpenbookError):  # then the message must not say "nothing"
            raise OpenbookError(str(exc).replace(NOTHING_REPLACED, "") + "; and "
                                + ", ".join(lost) + " could not be put back as it was") from exc
        raise
    finally:
        for tmp in temps + backups:
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


def check_not_cwd(out: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse an ``out`` that is the current folder or one holding it (``--out .``): it
    cannot be renamed into place or aside. Returns ``out`` unchanged."""
    out = Path(out)
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents or not out.name or out.name in (".", ".."):
        raise OpenbookError(f"{flag} {out}: is the current folder or holds it; give a new "
                            f"folder name, e.g. {flag} {Path('out') if not out.name else out / 'out'}")
    return out


def check_output_dir(out: str | os.PathLike, overwrite: bool, *, is_file: str, not_empty: str,
                     ours: Callable[[Path], bool], not_ours: str | None = None) -> None:
    """Refuse, before any work, an ``out`` folder that must not be replaced.

    The order of the checks is the same for every command; the wording is the caller's:

    * ``out`` is the current folder or holds it (``--out .``): refused;
    * ``out`` is a file: :class:`~pipeline.errors.OpenbookError` with ``is_file``;
    * ``out`` is a non-empty folder and ``ours(out)`` is false (not this command's
      artifact, e.g. a folder of the user's files): ``not_ours``, with or without
      ``overwrite``: ``--overwrite`` only ever replaces what the same command wrote;
    * ``out`` is a non-empty folder of ours and not ``overwrite``: ``not_empty``.
    """
    out = check_not_cwd(out)
    if out.exists() and not out.is_dir():
        raise OpenbookError(is_file)
    if out.is_dir() and any(out.iterdir()):
        if not ours(out):
            raise OpenbookError(not_ours or (
                f"--out {out} is a non-empty folder this command did not write; --overwrite "
                "only replaces this command's own output, so nothing was touched: choose "
                "another --out"))
        if not overwrite:
            raise OpenbookError(not_empty)


def _within(path: Path, other: Path) -> bool:
    path, other = Path(os.path.realpath(path)), Path(os.path.realpath(other))
    return path == other or other in path.parents


def check_output_file(path: str | os.PathLike, overwrite: bool, flag: str = "--out", *,
                      inputs: Sequence[tuple[str, str | os.PathLike]] = (),
                      others: Sequence[tuple[str, str | os.PathLike]] = ()) -> None:
    """Refuse, before any work, an output file ``path`` (given by ``flag``) that must not be
    written: a folder; one of the run's ``inputs`` (``(flag, path)``: a file, or a folder
    whose files are all refused) even with ``overwrite``; the same file as one of the
    ``others`` outputs; an existing file without ``overwrite``; a parent folder that cannot
    be created or written."""
    path = Path(path)
    if path.is_dir():
        raise OpenbookError(f"{flag} {path} is a directory; give a file path such as "
                            f"{path / 'submission.csv'}")
    for other_flag, other in others:
        if other is not None and _within(path, other):
            raise OpenbookError(f"{flag} {path} is the same file as {other_flag} {other}; give "
                                f"them different names")
    for in_flag, given in inputs:
        if given is not None and _within(path, given):
            raise OpenbookError(f"{flag} {path} would replace {in_flag} {given}, an input of "
                                f"this run (--overwrite never replaces an input); choose "
                                f"another {flag}")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OpenbookError(f"{flag} {path} already exists; pass --overwrite to replace it, "
                            f"or choose another {flag}")
    check_parent_writable(path, flag)


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
