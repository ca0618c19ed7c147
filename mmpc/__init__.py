"""mmpc: multi-level boosted fusion for multimodal product classification."""

__version__ = "0.1.0"
