"""The scoring benchmark: ``mmpc score`` over whole catalogs, products/s and peak memory.

1. the local engine (``mmpc score``'s default) on generated demo catalogs with photos (``--sizes``,
   default 10,000 and 100,000 products), with the champion ensemble of a ``demo+fast`` store;
2. the Spark engine (``--spark-master``, default ``local[2]``) on the same catalogs, its Parquet
   output checked against the local engine's (productid, prdtypecode, probability);
3. one request per product over HTTP to ``mlflow models serve`` of the same version, on a sample
   (``--http-sample``, default 1,000, photos as base64) with 1 and 4 concurrent clients;
4. the TF-IDF model alone (``--model tfidf``, ``@candidate``) on CSV files of products without photos
   (``--tfidf-sizes``, default 100,000 and 1,000,000), its peak memory at the largest against the
   smallest.

Every job runs in a process of its own, its process tree's resident memory sampled from ``/proc``
(Spark's JVM and Python workers included) and the process's own peak RSS (``ru_maxrss``) reported.
The store is built first (demo catalog, the ``retrain`` flow with ``--recipe``) unless ``--workdir``
holds one; inputs are written under ``<workdir>/bench-data`` and reused by later runs. ``--tiny`` is
a smoke test (one 300-product catalog, 2,000 and 4,000 texts, 50 products over HTTP).

    .venv/bin/python bench/score.py --workdir /tmp/score-bench   # the defaults: 30-40 min, 2 cores
    .venv/bin/python bench/score.py --tiny                       # does it run? (~3 min, store built)

The readable report goes to stdout; its last line is one JSON object with the figures and the
targets (``targets``: local >= 3x HTTP, TF-IDF peak memory at the largest size within 10 % of the
smallest, Spark within 2x of local, Spark's answers identical to local's).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `flows`, `infra` and `bench` live at the repository root

from bench.offline import prepare  # noqa: E402

prepare()  # offline and quiet, before MLflow, transformers or Prefect are imported

from bench.scoring.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(description=__doc__.split("\n\n")[0]))
