"""Models-from-code definition of a level-1 pyfunc (see mmpc.serving.Level1Model)."""

import mlflow

from mmpc.serving import Level1Model

mlflow.models.set_model(Level1Model())
