"""Regenerate the ``--help`` blocks of docs/cli.md from the commands themselves.

docs/cli.md holds, for each command, a block between two markers::

    <!-- help: pipeline.build_index -->
    ```
    ...the output of `python -m pipeline.build_index --help`...
    ```
    <!-- /help -->

This script runs every such command with ``--help`` (the words after ``pipeline.X`` in
the marker are passed too, e.g. ``<!-- help: pipeline.models fetch -->``) and rewrites
the block in place; the prose around the blocks is left alone. Run it from anywhere
after changing a flag::

    .venv/bin/python scripts/cli_reference.py           # rewrite docs/cli.md
    .venv/bin/python scripts/cli_reference.py --check   # exit 1 if docs/cli.md is stale

The help is rendered 80 columns wide (``COLUMNS=80``) with ``HF_HUB_OFFLINE=1``, so the
output does not depend on the terminal or the network.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cli.md"
BLOCK = re.compile(r"(<!-- help: (?P<cmd>[^>]+?) -->\n)```\n.*?```\n(<!-- /help -->)", re.S)


def help_text(cmd: str) -> str:
    """The ``--help`` output of ``python -m CMD`` (CMD = module plus optional subcommand)."""
    env = {**os.environ, "COLUMNS": "80", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = cmd.split()
    proc = subprocess.run([sys.executable, "-m", *args, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"python -m {cmd} --help failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout.rstrip() + "\n"


def render(doc: str) -> str:
    """``doc`` with every help block replaced by the command's current ``--help``."""
    def block(m: re.Match) -> str:
        print(f"python -m {m['cmd']} --help", file=sys.stderr)
        return f"{m.group(1)}```\n{help_text(m['cmd'])}```\n{m.group(3)}"

    new, n = BLOCK.subn(block, doc)
    if n == 0:
        raise SystemExit(f"no '<!-- help: ... -->' blocks in {DOC}")
    return new


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true",
                   help="only compare: exit 1 when docs/cli.md differs from the current --help")
    args = p.parse_args(argv)
    old = DOC.read_text(encoding="utf-8")
    new = render(old)
    if args.check:
        if new != old:
            print(f"{DOC.relative_to(ROOT)} is stale: run scripts/cli_reference.py", file=sys.stderr)
            return 1
        print(f"{DOC.relative_to(ROOT)} is current", file=sys.stderr)
        return 0
    if new != old:
        tmp = DOC.with_suffix(".md.tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(DOC)
        print(f"rewrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    else:
        print(f"{DOC.relative_to(ROOT)} already current", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
