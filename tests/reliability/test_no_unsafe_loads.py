"""No code of ours unpickles files: a checkpoint, index or reader folder from elsewhere must
never run code when loaded. Fails if someone adds ``pickle.load``, ``torch.load(`` without
``weights_only=True``, ``np.load(allow_pickle=True)``, ``pd.read_pickle`` or the like."""

from __future__ import annotations

import ast
import json

from reliability_helpers import REPO

SCANNED = ("pipeline", "benchmarks", "tests", "notebooks")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                  "marshal"}
PICKLE_FUNCS = {"load", "loads", "Unpickler", "open"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in call.keywords)


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """``file:line: what`` for every unpickling call or import in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            bad = [a.name for a in node.names if a.name in PICKLE_FUNCS | {"*"}]
            if bad:
                found.append(f"{where}: from {node.module} import {', '.join(bad)}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, last = name.rpartition(".")
        if head.split(".")[-1] in PICKLE_MODULES and last in PICKLE_FUNCS:
            found.append(f"{where}: {name}(")
        elif name == "torch.load" or name.endswith(".torch.load"):
            if not _kw_true(node, "weights_only"):
                found.append(f"{where}: {name}( without weights_only=True")
        elif last == "load" and head.split(".")[-1] in ("np", "numpy") and _kw_true(node, "allow_pickle"):
            found.append(f"{where}: {name}(allow_pickle=True)")
        elif last in ("read_pickle", "from_pickle"):
            found.append(f"{where}: {name}(")
    return found


def _sources():
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")) if (REPO / top).exists() else ():
            if ".venv" not in path.parts and ".ipynb_checkpoints" not in path.parts:
                yield path, path.read_text(encoding="utf-8")
        for path in sorted((REPO / top).rglob("*.ipynb")) if (REPO / top).exists() else ():
            cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
            code = "\n".join("".join(c.get("source", [])) for c in cells
                             if c.get("cell_type") == "code")
            code = "\n".join(ln for ln in code.splitlines() if ln.lstrip()[:1] not in ("!", "%"))
            yield path, code


def test_scanner_catches_what_it_should():
    planted = (
        "import pickle, torch, numpy as np, pandas as pd\n"
        "a = pickle.load(open('x', 'rb'))\n"
        "b = torch.load('ckpt.pt')\n"
        "c = torch.load(\n    'ckpt.pt',\n    map_location='cpu',\n)\n"
        "d = torch.load('ckpt.pt', weights_only=False)\n"
        "e = np.load('v.npy', allow_pickle=True)\n"
        "f = pd.read_pickle('t.pkl')\n"
        "from pickle import loads\n"
        "import joblib; g = joblib.load('m.joblib')\n"
    )
    assert len(unsafe_loads(planted)) == 8, unsafe_loads(planted)
    safe = ("import torch, numpy as np, json\n"
            "a = torch.load('c.pt', map_location='cpu', weights_only=True)\n"
            "b = np.load('v.npy')\nc = json.load(open('m.json'))\n"
            "s = 'pickle.load(f) in a string is fine'\n")
    assert unsafe_loads(safe) == []


def test_no_unsafe_deserialisation_in_the_code_base():
    found = [hit for path, src in _sources()
             for hit in unsafe_loads(src, str(path.relative_to(REPO)))]
    assert found == [], ("unpickling runs code from the file; load weights with "
                         "torch.load(..., weights_only=True) or safetensors, data with "
                         "json/parquet/np.load (no allow_pickle):\n" + "\n".join(found))
