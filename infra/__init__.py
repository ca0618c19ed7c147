"""Infrastructure for mmpc: container recipes (compose.yaml, docker/) and, in ``local/``, the same
topology as real processes on 127.0.0.1 for tests and single boxes."""
