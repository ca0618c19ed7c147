"""Training throughput of the level-1 networks: the paper's way against mmpc's.

The paper's exact architectures with random weights (nothing is downloaded), as the recipe
`mlproject/paper-shapes.yaml` declares them: FlauBERT-base and CamemBERT-base with their heads (27
classes, max_len 256) and SE-ResNeXt-50; the training hyper-parameters (learning rate, optimiser,
schedule, epochs) are the paper recipe's (`mlproject/paper.yaml`). Every measurement runs mmpc's own
training step, `mmpc.training.engine.train_one_epoch`, over a fixed number of batches, with the model
and optimiser built as mmpc builds them.

Text, the same model and the same samples measured two ways:
- paper: every sample padded to 256, fp32, plain random batches, eager attention, unfused AdamW;
- mmpc:  dynamic padding over length-bucketed batches (LengthBucketSampler + TextCollator), bf16
         autocast on CUDA (fp32 on CPU), SDPA attention where the backbone has it, fused AdamW on CUDA.
Image: images/s of a training step fed by a DataLoader that decodes JPEGs, trims borders and applies
the paper's augmentation, plus the loader alone and the model alone (preloaded tensors).
From the rates it projects the wall time of the paper's whole level-1 recipe on this device.

Runs with torch, transformers, timm, PyYAML and pandas (the recipe reader); no MLflow, Prefect,
LightGBM, shap or scikit-learn:
    PYTHONPATH=. python bench/train_throughput.py [--device auto|cpu|cuda] [--scale full|small|tiny]
On CPU (or --scale small) a scaled-down configuration runs (~1-2 minutes on 2 cores); --scale tiny is a
seconds-long check that everything runs (its figures mean nothing).
The last line printed is one JSON object with every figure. The parts live in `bench/throughput/`
(see its `__init__`).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `bench` lives at the repository root

from bench.throughput.cli import main  # noqa: E402

if __name__ == "__main__":
    main(description=__doc__.split("\n")[0])
