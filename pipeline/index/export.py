"""ONNX / OpenVINO runtimes for :class:`pipeline.index.embedding.Embedder` (CPU speed-ups).

sentence-transformers' own ``backend="onnx"|"openvino"`` needs ``optimum-onnx`` /
``optimum-intel``, whose releases pin ``transformers<5.6`` while the project runs
transformers 5.x; so we export the model ourselves, offline, from the local model
folder: the transformer **and its pooling** (every module but ``Normalize``) are
traced with ``torch.onnx.export`` into one graph ``(input_ids, attention_mask,
token_type_ids) -> (batch, dim)`` sentence embeddings. ``int8`` is ONNX Runtime's
dynamic quantisation of the weight MatMuls, per channel (attention's activation x
activation products and the FFN output projection stay fp32; the vectors then
differ slightly from fp32 ones, see docs/throughput.md). OpenVINO reads the same
``.onnx`` files.

Exports are cached, never rebuilt for the same model, under
``models_dir()/exported/<model>-<key>/`` (``$OPENBOOK_MODELS``, default
``./models``; ``$OPENBOOK_EXPORT_DIR`` overrides the whole place), written to a
temp folder and renamed, so nothing is ever written into the model folder (or
site-packages) and a killed export leaves nothing half-done.

Example::

    >>> from pipeline.index.embedding import Embedder
    >>> emb = Embedder("minilm", backend="onnx", quantize="int8")   # doctest: +SKIP
    >>> emb.encode(["Water boils at 100 °C."]).shape                # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from pipeline.paths import models_dir
from pipeline.errors import EmbedderError

log = logging.getLogger(__name__)

#: Bump when the exported graph changes, so old caches are not reused.
EXPORT_VERSION = 2
OPSET = 17
#: backend -> (python modules it needs, pip extra that installs them)
NEEDS = {"onnx": (("onnxruntime", "onnx"), "onnx"),
         "openvino": (("openvino", "onnx"), "openvino")}
INT8_NEEDS = ("onnxruntime", "onnx")  # the quantiser is onnxruntime's, for both backends


def require(backend: str, quantize: str | None, *, flags: str | None = None,
            error: type[Exception] = EmbedderError) -> None:
    """Raise ``error`` naming the flag(s) (default ``--backend B [--quantize int8]``) and the
    pip extra if a package is missing."""
    modules, extra = NEEDS[backend]
    if quantize == "int8":
        modules = tuple(dict.fromkeys(modules + INT8_NEEDS))
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        flags = flags or f"--backend {backend}" + (" --quantize int8" if quantize else "")
        raise error(
            f"{flags} needs the Python package(s) {', '.join(missing)}, which are not installed. "
            f"Install them with: pip install 'openbook[{extra}]' (or pip install {' '.join(missing)}), "
            f"or use {flags.split()[0]} torch")


def export_dir(model_path: str, name: str) -> Path:
    """The cache folder for ``model_path``'s exports (derived from its config and weights)."""
    root = Path(os.environ.get("OPENBOOK_EXPORT_DIR") or (models_dir() / "exported"))
    folder = Path(model_path)
    h = hashlib.sha256(f"v{EXPORT_VERSION} opset{OPSET}".encode())
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix in (".json", ".txt", ".safetensors", ".bin", ".model"):
            st = f.stat()
            h.update(f"{f.relative_to(folder)}:{st.st_size}".encode())
            if f.suffix == ".json" or st.st_size < 1 << 20:
                h.update(f.read_bytes())
            else:  # weights: their first and last MiB stand for the whole (fast on 1 GB files)
                with open(f, "rb") as fh:
                    h.update(fh.read(1 << 20))
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read(1 << 20))
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name.split("/")[-1])
    return root / f"{slug}-{h.hexdigest()[:12]}"


def _traceable(st_model):
    """The model minus ``Normalize``, as a module of tensors -> pooled (batch, dim) embeddings."""
    import torch
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Normalize

    modules = [m for m in st_model if not isinstance(m, Normalize)]

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mods = torch.nn.ModuleList(modules)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            feats = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                feats["token_type_ids"] = token_type_ids
            for m in self.mods:
                feats = m(feats)
            return feats["sentence_embedding"]

    return Pooled().eval()


def _input_names(st_model) -> list[str]:
    feats = st_model.preprocess(["a b", "c"])
    return [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in feats]


def ensure_exported(st_model, model_path: str, name: str, quantize: str | None) -> Path:
    """Path of the ``.onnx`` file (fp32, or int8 when ``quantize``), exporting it once if needed."""
    folder = export_dir(model_path, name)
    target = folder / ("model_int8.onnx" if quantize == "int8" else "model.onnx")
    if target.exists():
        return target
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as e:
        raise EmbedderError(
            f"cannot write the exported model under {folder.parent} ({e.strerror or e}); set "
            "$OPENBOOK_MODELS (or $OPENBOOK_EXPORT_DIR) to a folder you can write to") from e
    try:
        fp32 = folder / "model.onnx"
        if fp32.exists():
            shutil.copy2(fp32, tmp / "model.onnx")
        else:
            log.info("exporting %s to ONNX (once) -> %s", name, folder)
            _export_fp32(st_model, tmp / "model.onnx")
        if quantize == "int8":
            _quantize_int8(tmp / "model.onnx", tmp / "model_int8.onnx")
        (tmp / "export.json").write_text(json.dumps(
            {"model": name, "from": model_path, "export_version": EXPORT_VERSION, "opset": OPSET,
             "inputs": _input_names(st_model), "output": "sentence_embedding (pooled, not normalised)",
             "int8": "onnxruntime quantize_dynamic, weight MatMuls but the FFN output, per-channel QInt8"}, indent=2))
        folder.mkdir(exist_ok=True)
        for f in tmp.iterdir():  # each file appears whole or not at all
            os.replace(f, folder / f.name)
    except OSError as e:
        raise EmbedderError(
            f"cannot write the exported model to {folder} ({e.strerror or e}); set $OPENBOOK_MODELS "
            "(or $OPENBOOK_EXPORT_DIR) to a folder you can write to, with ~2x the model's size free") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _export_fp32(st_model, out: Path) -> None:
    import torch

    names = _input_names(st_model)
    feats = st_model.preprocess(["an example sentence to trace", "short"])
    args = tuple(feats[k].to("cpu") for k in names)
    axes = {k: {0: "batch", 1: "seq"} for k in names} | {"sentence_embedding": {0: "batch"}}
    module = _traceable(st_model).to("cpu")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about constant shapes
        torch.onnx.export(module, args, str(out), dynamo=False, input_names=names,
                          output_names=["sentence_embedding"], dynamic_axes=axes,
                          opset_version=OPSET)


def _quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().disabled, was = True, logging.getLogger().disabled  # "consider pre-processing" noise
    import onnx

    graph = onnx.load(str(src), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    # Weight MatMuls only (not attention's activation x activation ones), and not the FFN output
    # projection, whose input (after GELU) has the widest range: measured on MiniLM, this keeps
    # most of the speed-up and halves the recall loss of quantizing every MatMul.
    nodes = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights
             and not ("/output/dense/" in n.name and "/attention/" not in n.name)]
    try:
        quantize_dynamic(str(src), str(dst), nodes_to_quantize=nodes, per_channel=True,
                         weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().disabled = was


class Runner:
    """Runs an exported ``.onnx`` file with ONNX Runtime or OpenVINO on CPU.

    ``runner(feeds)`` with int64 ``(batch, seq)`` arrays by input name -> ``(batch, dim)`` float32.
    """

    def __init__(self, path: Path, backend: str, threads: int | None = None,
                 precision: str | None = None) -> None:
        self.path, self.backend = path, backend
        if backend == "onnx":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads:
                so.intra_op_num_threads = threads
            # Busy-waiting worker threads cost dearly on a machine shared with other jobs.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
        else:
            import openvino as ov

            core = ov.Core()
            config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
            if precision:  # OpenVINO's INFERENCE_PRECISION_HINT, e.g. "f32" (default: its own)
                config["INFERENCE_PRECISION_HINT"] = precision
            self.compiled = core.compile_model(str(path), "CPU", config)
            self.inputs = [i.any_name for i in self.compiled.inputs]
            self.request = self.compiled.create_infer_request()
        self.precision = self._precision()

    def _precision(self) -> str:
        """What the runtime computes in: OpenVINO picks bf16 by itself on CPUs with AMX."""
        if self.backend == "onnx":
            return "float32"
        try:
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            name = str(getattr(hint, "type_name", None) or hint)
            return {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}.get(name, name)
        except Exception:  # noqa: BLE001 - an older OpenVINO without the property
            return "unknown"

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {k: np.ascontiguousarray(feeds[k], dtype=np.int64) for k in self.inputs}
        if self.backend == "onnx":
            out = self.session.run(None, feeds)[0]
        else:
            out = self.request.infer(feeds)[0]
        return np.asarray(out, dtype=np.float32)
