"""Serving benchmark: mmpc's one-pass ensemble against the naive composition of its level-1 pyfuncs.

The naive composition is what a user without ``mmpc-ensemble`` would run: each registered level-1
pyfunc (``models:/mmpc-<name>/<v>``) on the request, then the LightGBM stacker on their concatenated
probabilities. It runs six backbone passes per product (fusion runs its own three) where the
ensemble runs three, and it parses the request (and decodes the images) once per model.

Measured in one run, on the same requests (real test-split rows, every other one with its photo):

1. in process: products/s for batches of ``--batch`` products, ensemble and naive interleaved;
2. over HTTP (``mlflow models serve --env-manager local --workers 1``): products/s with ``--clients``
   threads sending batches of ``--http-batch``; single-product latency p50/p99 (sequential requests
   after a warm-up). Naive over HTTP: one server per level-1 model, the client calls them in turn
   and runs the booster itself;
3. a per-stage timing breakdown (``EnsemblePredictor.timings``) and a cProfile of single-product
   requests in process;
4. with ``--paper-size``: the paper's exact shapes with random weights (recipe ``paper-shapes``:
   FlauBERT-base, CamemBERT-base, SE-ResNeXt-50, the concat fusion), EnsemblePredictor against each
   level-1 model on its own + booster, in process only, a few batches with one torch thread
   (``--paper-threads``): two threads on a shared 2-core machine make each op wait for a descheduled
   thread whenever another job runs.

By default the models are built first (demo catalog of ``--size`` products, the ``retrain`` flow with
the recipe ``--recipe``, ``demo+fast`` by default, in a temporary store); ``--workdir DIR`` reuses a
store (``demo/`` after ``make demo``) or builds into DIR when it holds none. Every loop is bounded in
count and in seconds. The parts live in ``bench/serving/`` (see its ``__init__``).

    .venv/bin/python bench/serve.py                       # ~3-5 min on 2 CPU cores
    .venv/bin/python bench/serve.py --workdir demo --paper-size   # reuse `make demo`; +1-2 min

The readable report goes to stdout; its last line is one JSON object with the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `flows`, `infra` and `bench` live at the repository root

from bench.offline import prepare  # noqa: E402

prepare()  # offline and quiet, before MLflow, transformers or Prefect are imported

from bench.serving.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(description=__doc__.split("\n\n")[0]))
