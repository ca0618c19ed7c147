"""The serving benchmark (``bench/serve.py``), one concern per module:

- ``common``: the report's stdout kept clean, progress lines, request batches and JSON bodies;
- ``store``: the models to serve (a ``demo+fast`` retrain into a store, or a store reused) and
  real test-split rows as requests;
- ``inprocess``: products/s of the ensemble pyfunc against the naive composition of its level-1
  pyfuncs, in this process;
- ``loadtest``: the same over HTTP through ``mlflow models serve`` (the project's process harness,
  ``infra.local.processes``): throughput with concurrent clients, CPU per product, latency;
- ``profiling``: per-stage times of a single-product request (from ``EnsemblePredictor.timings``),
  the MLflow serving layers, a cProfile;
- ``paper``: the paper's exact shapes (recipe ``paper-shapes``) with random weights, in process;
- ``report``: the summary table and the last-line JSON;
- ``cli``: the command line.
"""
