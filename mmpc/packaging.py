"""What a logged model carries so that it loads where mmpc is not installed: the mmpc modules that
inference imports (found by walking the imports from the pyfunc wrappers and every kind's loader),
as MLflow ``code_paths``, and the pinned distributions of the libraries those modules import.

Only these modules travel: the training code, the flows and the orchestration, database and
object-store clients stay behind, and so do their requirements.
"""

from __future__ import annotations

import ast
import importlib.metadata
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmpc import kinds

ROOTS = ("mmpc.serving",)
# Loaded by name at run time, not imported by mmpc: the tokenizers of the paper's checkpoints
# (FlauBERT's Moses pre-tokenisation, CamemBERT's SentencePiece).
RUNTIME_EXTRAS = ("sacremoses", "sentencepiece")


PACKAGE_DIR = Path(__file__).resolve().parent


def _relative(name: str) -> Path | None:
    """``mmpc.models.store`` -> ``mmpc/models/store.py`` (a package: its ``__init__.py``); None for a
    name that is not a module of mmpc (an attribute imported with ``from mmpc.x import y``)."""
    parts = name.split(".")
    if parts[0] != "mmpc":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(PACKAGE_DIR.parent)
    return None


def _imports(path: Path) -> set[str]:
    """Every absolute import of a file, function-level ones included; ``from a import b`` gives a.b
    too (b may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def inference_closure() -> tuple[set[str], set[str]]:
    """(mmpc modules inference needs, top-level names of the other libraries they import)."""
    roots = [*ROOTS, *(k.load.partition(":")[0] for k in kinds.REGISTRY.values())]
    todo, seen, third_party = list(roots), set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        rel = _relative(name)
        if rel is None:
            continue
        seen.add(name)
        todo += _parents(name)
        for imported in _imports(PACKAGE_DIR.parent / rel):
            top = imported.split(".")[0]
            if top == "mmpc":
                todo.append(imported)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return seen, third_party


def write_code(dst: Path) -> Path:
    """The inference modules under ``dst/mmpc`` (the folder to give MLflow as a code path)."""
    modules, _ = inference_closure()
    for rel in filter(None, map(_relative, modules)):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_DIR.parent / rel, dst / rel)
    return dst / "mmpc"


def requirements() -> list[str]:
    """Pinned distributions of the libraries inference imports (and the tokenizers it loads)."""
    _, tops = inference_closure()
    dists = importlib.metadata.packages_distributions()
    names = set()
    for top in (*tops, *RUNTIME_EXTRAS):
        found = dists.get(top, [])
        # ``mlflow`` is also provided by mlflow-skinny and mlflow-tracing: the namesake is the one meant.
        names |= {top} if top in found else set(found)
    names = sorted(names)
    return [f"{n}=={importlib.metadata.version(n)}" for n in names]


@contextmanager
def own_imports() -> Iterator[None]:
    """Within: a model may be loaded in a process that runs mmpc itself. MLflow puts a model's
    ``code_paths`` ahead of everything on ``sys.path`` for good; left there, the process's later
    imports of mmpc would find the model's copy (a partial closure, maybe of an older version), and
    so would the worker processes it starts. Afterwards the path is as before and the mmpc modules
    imported from the copy are forgotten (the loaded model keeps the ones it uses)."""
    path = list(sys.path)
    before = {name for name in sys.modules if name == "mmpc" or name.startswith("mmpc.")}
    try:
        yield
    finally:
        sys.path[:] = path
        for name in [n for n in sys.modules if (n == "mmpc" or n.startswith("mmpc.")) and n not in before]:
            del sys.modules[name]
