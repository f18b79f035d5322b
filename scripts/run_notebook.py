#!/usr/bin/env python
"""Run a notebook of ``notebooks/`` headless, with its parameters overridden.

Follows papermill's convention: the notebook's first code cell is tagged
``parameters``; the values given here go into a new cell right after it
(tagged ``injected-parameters``), so they win. Only names the parameters cell
defines may be set (a typo fails before anything runs). The notebook runs in
its own folder (its default paths are relative to ``notebooks/``); the
executed copy, outputs included, is written to ``--out`` (the stored
notebook is never touched). ``papermill NB OUT -p name value`` does the same.

Usage::

    python scripts/run_notebook.py notebooks/03_predict.ipynb --out /tmp/03.ipynb \\
        -p index_dir index/demo -p time_budget 1h -p "reader_dirs=['readers/a']"

Values are Python literals (``5``, ``None``, ``['a']``, ``'8.5h'``), else strings.
The notebook runs in ``notebooks/``: a relative path is taken from there (as
its defaults are, such as ``../index/demo``); give absolute paths to be safe.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


class NotebookError(Exception):
    """A notebook cannot be parameterised or failed to run."""


def parameter_names(nb) -> list[str]:
    """Names assigned in the cell tagged ``parameters`` (in order)."""
    cell = _parameters_cell(nb)[1]
    names = []
    for node in ast.parse(cell.source).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def _parameters_cell(nb):
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and PARAMETERS_TAG in cell.metadata.get("tags", []):
            return i, cell
    raise NotebookError("no code cell is tagged 'parameters'")


def inject_parameters(nb, params: Mapping[str, Any]):
    """Insert ``name = value`` lines in a cell after the parameters cell; return ``nb``."""
    import nbformat

    known = parameter_names(nb)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise NotebookError(f"unknown parameter(s) {', '.join(unknown)}; this notebook's "
                            f"parameters are: {', '.join(known)}")
    i, _ = _parameters_cell(nb)
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.metadata.get("tags", [])]
    source = "# Parameters injected by scripts/run_notebook.py\n" + "".join(
        f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED_TAG]})
    nb.cells.insert(i + 1, cell)
    return nb


def execute(path: str | Path, params: Mapping[str, Any] | None = None, *,
            out: str | Path | None = None, timeout: int = 1800, kernel: str = "python3"):
    """Run the notebook at ``path`` in its folder with ``params``; return the executed
    notebook (also written to ``out`` when given). Raises :class:`NotebookError` naming the
    failing cell."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, params or {})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    try:
        client.execute()
    except CellExecutionError as e:
        raise NotebookError(f"{path}: a cell failed:\n{e}") from e
    finally:
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(out))
    return nb


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    return name.strip(), value


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebook", type=Path)
    p.add_argument("--out", type=Path, default=None,
                   help="executed copy to write (default: executed/NAME next to the notebook)")
    p.add_argument("-p", "--param", nargs="+", action="append", default=[], metavar="NAME VALUE",
                   help="a parameter: '-p name value' or '-p name=value'")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = p.parse_args(argv)
    params: dict[str, Any] = {}
    for item in args.param:
        if len(item) == 2:
            name, value = item
        elif len(item) == 1:
            name, value = _param(item[0])
        else:
            p.error(f"-p takes NAME VALUE or NAME=VALUE, got {' '.join(item)}")
        params[name] = _value(value)
    out = args.out or args.notebook.parent / "executed" / args.notebook.name
    try:
        execute(args.notebook, params, out=out, timeout=args.timeout)
    except NotebookError as e:
        sys.stderr.write(f"error: {e}\nexecuted copy (with the error): {out}\n")
        return 1
    sys.stdout.write(f"ran {args.notebook}; executed copy: {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
