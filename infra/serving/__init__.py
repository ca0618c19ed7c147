"""The scoring endpoint behind a TLS reverse proxy: nginx in front of ``mlflow models serve``, with
the registry's champion rolled out without downtime.

``python -m infra.serving --root DIR up|down|status|rollout``; see ``__main__`` for the commands,
``controller`` for how a new champion replaces the old one.
"""
