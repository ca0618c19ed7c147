"""The training-throughput benchmark (``bench/train_throughput.py``), one concern per module:

- ``settings``: the scales, the arguments, and what runs: the ``paper-shapes`` recipe's models
  (scaled down below full scale) with the ``paper`` recipe's optimisation settings;
- ``timing``: the timed loop around mmpc's ``train_one_epoch``, peak memory, the bf16 matmul peak;
- ``text_data``: token lengths (a WordPiece trained on the real sample, or log-normal) and the same
  samples batched the paper's way and mmpc's;
- ``text_bench``: the text models measured both ways, with their model FLOPs;
- ``image_data``: the JPEGs (real or generated) and the augmenting DataLoader;
- ``image_bench``: the image model alone, the loader alone, and training fed by the loader;
- ``projection``: minutes of the paper's whole level-1 recipe at the measured rates;
- ``report``: the header, the configuration's description and the last-line JSON's figures;
- ``cli``: the command line.
"""
