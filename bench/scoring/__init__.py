"""The scoring benchmark (``bench/score.py``), one concern per module:

- ``inputs``: generated demo catalogs with photos, CSVs of products without photos, HTTP requests;
- ``job``: one ``mmpc.scoring.score`` call in a process of its own, reporting its figures;
- ``memory``: a subprocess run with its process tree's resident memory sampled from ``/proc``;
- ``runs``: each job of the benchmark through ``job`` and ``memory``, a fresh output each time;
- ``compare``: the Spark engine's output against the local engine's;
- ``served``: one request per product to ``mlflow models serve`` (``bench.serving.loadtest``);
- ``report``: the tables, the targets and the last-line JSON;
- ``cli``: the command line.
"""
