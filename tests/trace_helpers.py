"""Helpers for the tracing and hot-loading tests: modules written to a temporary folder."""

from __future__ import annotations

import importlib
import itertools
import sys
import textwrap
from pathlib import Path

_n = itertools.count()


def make_module(tmp_path: Path, source: str, prefix: str = "tmod"):
    """Write ``source`` as a fresh module in ``tmp_path`` and import it."""
    name = f"{prefix}_{next(_n)}_{abs(hash(str(tmp_path))) % 10**6}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    if str(tmp_path) not in sys.path:
        sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    return importlib.import_module(name)


def rewrite(mod, source: str) -> None:
    """Replace the source file of ``mod`` (what an operator's hot fix does)."""
    Path(mod.__file__).write_text(textwrap.dedent(source))
