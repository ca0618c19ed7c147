"""The layering of the README's "How it is built", and ruff: checked on every CI run."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH_ONLY = ("mmpc/models", "mmpc/training")
FORBIDDEN_BELOW = {"mlflow", "prefect", "lightgbm", "shap"}
# What the model and training layer may import besides the standard library and mmpc: the modelling
# libraries (PyTorch's stack for the networks, scikit-learn's for the TF-IDF kind and the metrics) and
# the array and data libraries under them. A GPU box with these alone trains every level-1 kind.
MODELLING_LIBRARIES = {
    "torch",
    "torchvision",
    "transformers",
    "timm",
    "tokenizers",
    "safetensors",
    "sklearn",
    "scipy",
    "numpy",
    "pandas",
    "PIL",
    "tqdm",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder", TORCH_ONLY)
def test_models_and_training_import_no_tracking_or_orchestration(folder):
    for path in (REPO / folder).rglob("*.py"):
        bad = _imports(path) & FORBIDDEN_BELOW
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


@pytest.mark.parametrize("folder", TORCH_ONLY)
def test_models_and_training_import_modelling_libraries_only(folder):
    for path in (REPO / folder).rglob("*.py"):
        third_party = _imports(path) - set(sys.stdlib_module_names) - {"mmpc"}
        extra = third_party - MODELLING_LIBRARIES
        assert not extra, f"{path.relative_to(REPO)} imports {extra}, not a modelling library"


def test_prefect_is_imported_only_in_flows():
    for path in (REPO / "mmpc").rglob("*.py"):
        assert "prefect" not in _imports(path), f"{path.relative_to(REPO)} imports prefect"


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    targets = [p for p in ("mmpc", "flows", "tests", "bench") if (REPO / p).exists()]
    proc = subprocess.run([ruff, "check", *targets], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_inference_does_not_import_training():
    """What a served model loads (the pyfunc wrappers and everything they import) holds no training
    code, and no orchestration, database or object-store client."""
    probe = (
        "import sys, mmpc.serving; "
        "print(sorted(m for m in sys.modules if m.startswith('mmpc.training') "
        "or m.split('.')[0] in ('prefect', 'psycopg2', 'boto3')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"inference imports {proc.stdout.strip()}"
