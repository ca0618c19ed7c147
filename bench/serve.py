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
3. a per-stage timing breakdown and a cProfile of single-product requests in process;
4. with ``--paper-size``: paper-size architectures with random weights (FlauBERT-base, CamemBERT-base,
   SE-ResNeXt-50), EnsemblePredictor against four Level1Predictor's + booster, in process only, a few
   batches with one torch thread (``--paper-threads``): two threads on a shared 2-core machine make
   each op wait for a descheduled thread whenever another job runs.

By default the models are built first (demo catalog of ``--size`` products, the ``retrain`` flow with
fewer epochs, in a temporary store); ``--workdir DIR`` reuses a store (``demo/`` after ``make demo``)
or builds into DIR when it holds none. Every loop is bounded in count and in seconds.

    .venv/bin/python bench/serve.py                       # ~2-3 min on 2 CPU cores
    .venv/bin/python bench/serve.py --workdir demo --paper-size   # reuse `make demo`; +1-2 min

The readable report goes to stdout; its last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `flows` lives at the repository root, beside the installed `mmpc`

# Offline and quiet, before MLflow, transformers or Prefect are imported.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# Fewer epochs than the demo recipe: the benchmark needs the architectures, not the accuracy.
FAST = {
    "models.flaubert.train.epochs": 2,
    "models.camembert.train.epochs": 2,
    "models.seresnext.train.epochs": 2,
    "models.fusion.train.epochs": 4,
    "stacking.num_boost_round": 150,
    "stacking.folds": 3,
}


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Library chatter (training progress, registry messages, native progress bars) goes to stderr,
    so stdout holds the report alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- store


@dataclass
class Store:
    uri: str
    catalog: Path
    ensemble_version: str
    members: list[str]  # stacking order
    versions: dict[str, str]  # level-1 name -> registered version
    ensemble_dir: Path  # the downloaded pyfunc folder of mmpc-ensemble
    codes: list[int] = field(default_factory=list)


def use_store(workdir: Path) -> str:
    """Point MLflow at the workdir's SQLite store (or MLFLOW_TRACKING_URI) in this process."""
    from mmpc import tracking

    return tracking.configure(workdir)


def build_store(workdir: Path, size: int, seed: int) -> Path:
    """A demo catalog and the whole ``retrain`` flow (fewer epochs) into ``workdir``; returns the catalog."""
    import torch
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain
    from mmpc.demo_catalog import write_demo_catalog

    catalog = write_demo_catalog(workdir / "catalog", size=size, seed=seed)
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)  # the temporary store, never the caller's
    # One torch thread while training: with two, a busy neighbour job made the build 5x slower here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with prefect_test_harness():
            retrain(catalog=str(catalog), recipe="demo", workdir=str(workdir), overrides=FAST)
    finally:
        torch.set_num_threads(threads)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return catalog


def open_store(workdir: Path, catalog: Path, scratch: Path, alias: str) -> Store:
    """The ensemble version behind ``alias`` (champion, else candidate), its members, its folder."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mmpc import ensemble, tracking

    uri = use_store(workdir)
    try:
        mv = tracking.resolve("ensemble", alias)
    except MlflowException:
        mv = tracking.resolve("ensemble", "candidate")
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{mv.name}/{mv.version}", dst_path=str(scratch / "ens"))
    )
    manifest = json.loads((local / "artifacts" / "ensemble" / ensemble.MANIFEST).read_text())
    members = [m["name"] for m in manifest["members"]]
    versions = {
        n: mv.tags.get(f"mmpc.member.{n}") or m["version"]
        for n, m in zip(members, manifest["members"], strict=True)
    }
    return Store(uri, catalog, str(mv.version), members, versions, local, manifest["codes"])


# ------------------------------------------------------------------------------------------ requests


def request_rows(catalog: Path, recipe: str, n: int) -> pd.DataFrame:
    """Real test-split rows as serving input; every other row carries its photo as base64."""
    from mmpc import pipeline
    from mmpc.recipe import load_recipe

    cat = pipeline.open_catalog(catalog, load_recipe(recipe))
    test = cat.split("test")
    rows = pd.concat([test] * (1 + n // max(1, len(test))), ignore_index=True).head(n)
    images = [
        base64.b64encode(Path(p).read_bytes()).decode() if has and i % 2 == 0 else None
        for i, (p, has) in enumerate(zip(rows["image_path"], rows["has_image"], strict=True))
    ]
    description = [d if isinstance(d, str) else None for d in rows["description"]]
    return pd.DataFrame(
        {"designation": rows["designation"].tolist(), "description": description, "image": images}
    )


def batches(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [frame.iloc[i : i + size].reset_index(drop=True) for i in range(0, len(frame) - size + 1, size)]


def payload(frame: pd.DataFrame) -> bytes:
    split = frame.to_dict(orient="split")
    return json.dumps({"dataframe_split": {"columns": split["columns"], "data": split["data"]}}).encode()


# ---------------------------------------------------------------------------------------- in process


@dataclass
class Naive:
    """Each level-1 pyfunc on its own, then the booster on their concatenated probabilities."""

    models: dict[str, Any]  # name -> mlflow PyFuncModel
    members: list[str]
    codes: list[int]
    booster: Any

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        from mmpc import stacking

        probs = {n: m.predict(frame).to_numpy() for n, m in self.models.items()}
        return self.booster.predict(stacking.features(probs, self.members, self.codes))


def load_naive(store: Store) -> Naive:
    import mlflow

    from mmpc import stacking

    models = {n: mlflow.pyfunc.load_model(f"models:/mmpc-{n}/{store.versions[n]}") for n in store.members}
    booster = stacking.load(store.ensemble_dir / "artifacts" / "ensemble")
    return Naive(models, store.members, store.codes, booster)


def interleaved(
    calls: dict[str, Callable[[pd.DataFrame], Any]], frames: Sequence[pd.DataFrame], max_s: float
) -> dict[str, float]:
    """products/s of each call on the same batches, alternating calls batch by batch (shared noise)."""
    for call in calls.values():  # warm-up: first-call allocations, lazy imports
        call(frames[0])
    spent = dict.fromkeys(calls, 0.0)
    done = 0
    deadline = time.monotonic() + max_s
    for frame in frames[1:]:
        for name, call in calls.items():
            t0 = time.perf_counter()
            call(frame)
            spent[name] += time.perf_counter() - t0
        done += len(frame)
        if time.monotonic() > deadline:
            break
    return {name: done / s for name, s in spent.items()} | {"products": float(done)}


def agreement(ens_model: Any, naive: Naive, frame: pd.DataFrame) -> float:
    """Share of products where the ensemble and the naive composition predict the same code."""
    ens = ens_model.predict(frame)["prdtypecode"].to_numpy()
    nai = np.asarray(naive.codes)[naive.predict(frame).argmax(1)]
    return float((ens == nai).mean())


# ---------------------------------------------------------------------------------------------- HTTP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    log_path: Path


def start_server(name: str, model_uri: str, tracking_uri: str, logdir: Path, extra_env: dict) -> Server:
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        **extra_env,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
    }
    port = free_port()
    log_path = logdir / f"serve-{name}.log"
    cmd = [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Server(name, proc, f"http://127.0.0.1:{port}", log_path)


def wait_ready(servers: Sequence[Server], timeout: float = 180) -> None:
    import requests

    pending = list(servers)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for srv in list(pending):
            if srv.proc.poll() is not None:
                raise RuntimeError(f"server {srv.name} exited:\n{srv.log_path.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{srv.url}/ping", timeout=2).status_code == 200:
                    pending.remove(srv)
        time.sleep(0.5)
    if pending:
        raise TimeoutError(f"no /ping answer within {timeout:.0f} s from {[s.name for s in pending]}")


def stop_servers(servers: Sequence[Server]) -> None:
    for srv in servers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(srv.proc.pid, signal.SIGTERM)
    for srv in servers:
        try:
            srv.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(timeout=10)


@contextlib.contextmanager
def served(
    specs: dict[str, tuple[str, dict]], tracking_uri: str, logdir: Path
) -> Iterator[dict[str, Server]]:
    """``mlflow models serve`` for each name -> (model URI, extra environment), all answering /ping."""
    servers: list[Server] = []
    try:
        for name, (uri, extra_env) in specs.items():
            servers.append(start_server(name, uri, tracking_uri, logdir, extra_env))
        wait_ready(servers)
        yield {s.name: s for s in servers}
    finally:
        stop_servers(servers)


def group_cpu_s(pgids: Sequence[int]) -> float | None:
    """CPU seconds (user + system) used so far by every process in these process groups (Linux)."""
    if not Path("/proc/self/stat").is_file():
        return None
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # fields from `state` on: pgrp [2], utime [11]
        if int(fields[2]) in pgids:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


Client = Callable[[Any, bytes], Any]  # (requests.Session, JSON body) -> response payload


def post(session: Any, url: str, body: bytes) -> dict:
    resp = session.post(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=120
    )
    if resp.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {resp.status_code}: {resp.text[:500]}")
    return resp.json()


def ensemble_client(url: str) -> Client:
    return lambda session, body: post(session, url, body)


def probabilities(answer: dict, codes: Sequence[int]) -> np.ndarray:
    """A level-1 server's answer (records or columns) as [n, C] in code order; null/NaN stay NaN."""
    preds = answer["predictions"]
    if isinstance(preds, dict):
        return np.array([preds[str(c)] for c in codes], dtype=float).T
    return np.array([[row.get(str(c)) for c in codes] for row in preds], dtype=float)


def naive_client(urls: dict[str, str], members: list[str], codes: list[int], booster: Any) -> Client:
    """The level-1 servers called in turn, then the booster in the client."""
    from mmpc import stacking

    def call(session: Any, body: bytes) -> np.ndarray:
        probs = {n: probabilities(post(session, urls[n], body), codes) for n in members}
        return booster.predict(stacking.features(probs, members, codes))

    return call


def http_throughput(
    client: Client, bodies: Sequence[bytes], per_body: int, clients: int, max_s: float
) -> tuple[int, float]:
    """(products answered, seconds) with ``clients`` threads sharing the bodies (each sent once)."""
    import requests

    todo = iter(range(len(bodies)))
    lock = threading.Lock()
    done = [0]
    errors: list[BaseException] = []
    deadline = time.monotonic() + max_s

    def worker() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    client(session, bodies[i])
                except Exception as exc:  # reported after the threads end
                    errors.append(exc)
                    return
                with lock:
                    done[0] += per_body

    with requests.Session() as session:
        client(session, bodies[0])  # warm-up
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_s + 120)
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return done[0], elapsed


def latencies(client: Client, bodies: Sequence[bytes], n: int, warmup: int, max_s: float) -> np.ndarray:
    """Seconds per sequential single-product request, cycling through ``bodies``."""
    import requests

    out = []
    with requests.Session() as session:
        for i in range(warmup):
            client(session, bodies[i % len(bodies)])
        deadline = time.monotonic() + max_s
        for i in range(n):
            t0 = time.perf_counter()
            client(session, bodies[i % len(bodies)])
            out.append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                break
    return np.asarray(out)


def pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q) * 1000) if len(values) else float("nan")


# ------------------------------------------------------------------------------------------- profile


@contextlib.contextmanager
def timed(stages: dict[str, list[float]], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    stages.setdefault(name, []).append((time.perf_counter() - t0) * 1000)


def stage_breakdown(ens_model: Any, singles: Sequence[pd.DataFrame], rounds: int) -> dict[str, float]:
    """Median ms per stage of a single-product request, in process, each stage timed on its own."""
    from mmpc import requests as mreq
    from mmpc import stacking

    pred = ens_model.unwrap_python_model().predictor
    stages: dict[str, list[float]] = {}
    for i in range(rounds):
        frame = singles[i % len(singles)]
        if frame["image"].isna().all():  # stages below: products with a photo (the slower case)
            with timed(stages, "pyfunc predict, total (no image)"):
                ens_model.predict(frame)
            continue
        with timed(stages, "pyfunc predict, total (with image)"):
            ens_model.predict(frame)
        with timed(stages, "parse request (decode image)"):
            req = mreq.parse(frame)
        probs, embs = {}, {}
        for name, runner in pred.texts.items():
            with timed(stages, f"text runner {name}"):
                probs[name], embs[name] = runner.run(req.texts)
        for name, runner in pred.images.items():
            with timed(stages, f"image runner {name}"):
                probs[name], embs[name] = runner.run(req.images)
        for name, runner in pred.fusions.items():
            m = runner.meta
            with timed(stages, f"fusion head {name}"):
                probs[name] = runner.run([embs[t] for t in m["text"]], embs[m["image"]])
        for name, predictor in pred.separate.items():  # members with no shared backbone (TF-IDF)
            with timed(stages, f"own predictor {name}"):
                probs[name] = predictor.predict_proba(req.texts, req.images)
        with timed(stages, "stacking.features"):
            X = stacking.features(probs, pred.members, pred.codes)
        with timed(stages, "booster.predict"):
            pred.booster.predict(X)
        with timed(stages, "EnsemblePredictor.predict, total"):
            pred.predict(req)
    return {k: float(np.median(v)) for k, v in stages.items()}


def serving_breakdown(ens_model: Any, singles: Sequence[pd.DataFrame], rounds: int) -> dict[str, float]:
    """Median ms of the MLflow serving layers around one single-product prediction (with a photo),
    without HTTP, and of the pyfunc prediction with one torch thread."""
    import torch
    from mlflow.pyfunc import scoring_server

    schema = ens_model.metadata.get_input_schema()
    wrapper = ens_model.unwrap_python_model()
    parse_json = getattr(scoring_server, "_parse_json_data", None)  # private: skipped if it moves
    frames = [f for f in singles if f["image"].notna().all()] or list(singles)
    stages: dict[str, list[float]] = {}
    for i in range(rounds):
        frame = frames[i % len(frames)]
        body = payload(frame)
        with timed(stages, "scoring_server.invocations (JSON -> JSON)"):
            scoring_server.invocations(body, "application/json", ens_model, schema)
        if parse_json is not None:
            with timed(stages, "  JSON -> DataFrame (_parse_json_data)"):
                parse_json(body, ens_model.metadata, schema)
        with timed(stages, "  PyFuncModel.predict (schema enforcement)"):
            ens_model.predict(frame)
        with timed(stages, "  EnsembleModel.predict (no MLflow layer)"):
            wrapper.predict(None, frame)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(rounds):
            with timed(stages, f"PyFuncModel.predict, torch threads 1 (default {threads})"):
                ens_model.predict(frames[i % len(frames)])
    finally:
        torch.set_num_threads(threads)
    return {k: float(np.median(v)) for k, v in stages.items()}


def cprofile_top(ens_model: Any, singles: Sequence[pd.DataFrame], rounds: int, top: int = 18) -> str:
    """cProfile of ``rounds`` single-product pyfunc predictions, top functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    for i in range(rounds):
        ens_model.predict(singles[i % len(singles)])
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return "\n".join(lines[start:])


# ---------------------------------------------------------------------------------------- paper size


# name -> (transformers model type, config of the -base model, head, lowercase tokenizer, real vocabulary)
PAPER_TEXT = {
    "flaubert": (
        "flaubert",
        {"emb_dim": 768, "n_layers": 12, "n_heads": 12, "max_position_embeddings": 512, "dropout": 0.1},
        "flaubert",
        False,
        68729,  # flaubert_base_cased
    ),
    "camembert": (
        "camembert",
        {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 514,
        },
        "cls",
        True,
        32005,  # camembert-base
    ),
}
PAPER_MAX_LEN = 256


def paper_text_folder(out: Path, name: str, texts: list[str], codes: list[int], vocab: int) -> Path:
    """A text folder as train_text writes it: tokenizer/, backbone/config.json, weights, meta."""
    from mmpc.models import store
    from mmpc.models.text import TextClassifier, build_backbone
    from mmpc.models.tokenizer import special_token_ids, train_wordpiece

    backbone_type, config, head, lowercase, real_vocab = PAPER_TEXT[name]
    tok = train_wordpiece(texts, vocab, lowercase)
    # The embedding table at the real model's size (memory, load time); a lookup costs the same.
    vocab_size = max(len(tok), real_vocab)
    backbone = build_backbone(None, backbone_type, config, vocab_size, special_token_ids(tok))
    model = TextClassifier(backbone, len(codes), head, PAPER_MAX_LEN, 0.1)
    tok.save_pretrained(out / "tokenizer")
    model.backbone.config.save_pretrained(out / "backbone")
    meta = {
        "kind": "text",
        "name": name,
        "codes": codes,
        "head": head,
        "max_len": PAPER_MAX_LEN,
        "dropout": 0.1,
        "hidden_size": model.hidden_size,
        "backbone": backbone_type,
    }
    store.save_weights(out, model, meta)
    return out


def paper_image_folder(out: Path, codes: list[int], arch: str = "seresnext50_32x4d") -> Path:
    from dataclasses import asdict

    from mmpc import images
    from mmpc.models import store
    from mmpc.models.image import ImageClassifier

    model = ImageClassifier(arch, len(codes), pretrained=False)
    data = model.data_config()
    tcfg = images.ImageTransformConfig(
        img_size=224,
        crop_fraction=224 / 256,
        mean=tuple(float(v) for v in data["mean"]),
        std=tuple(float(v) for v in data["std"]),
    )
    meta = {
        "kind": "image",
        "name": "seresnext",
        "codes": codes,
        "arch": arch,
        "num_features": model.num_features,
        "transform": asdict(tcfg),
    }
    store.save_weights(out, model, meta)
    return out


def paper_fusion_folder(out: Path, inputs: dict[str, Path], codes: list[int]) -> Path:
    """The concat fusion head over [flaubert, camembert, seresnext]; inputs hard-linked under inputs/."""
    from mmpc.models import store
    from mmpc.models.fusion import FusionHead

    text, image = ["flaubert", "camembert"], "seresnext"
    text_dims = [store.read_meta(inputs[n])["hidden_size"] for n in text]
    image_dim = store.read_meta(inputs[image])["num_features"]
    head = FusionHead(text_dims, image_dim, len(codes), "concat", None, 0.1)
    for n, folder in inputs.items():
        shutil.copytree(folder, out / "inputs" / n, copy_function=os.link, dirs_exist_ok=True)
    meta = {
        "kind": "fusion",
        "name": "fusion",
        "codes": codes,
        "text": text,
        "image": image,
        "mode": "concat",
        "dim": head.dim,
        "dropout": 0.1,
        "text_dims": text_dims,
        "image_dim": image_dim,
        "input_weights_sha256": {n: store.read_meta(f)["weights_sha256"] for n, f in inputs.items()},
    }
    store.save_weights(out, head, meta)
    return out


def random_booster(out: Path, members: list[str], codes: list[int], seed: int = 0) -> Path:
    """A LightGBM stacker of the demo's shape, trained on random probability features."""
    import lightgbm as lgb

    from mmpc import stacking

    rng = np.random.default_rng(seed)
    n, k = 1500, len(codes)
    X = pd.DataFrame(
        rng.dirichlet(np.ones(k), size=(n, len(members))).reshape(n, -1).astype(np.float32),
        columns=stacking.feature_names(members, codes),
    )
    y = rng.integers(0, k, n)
    params = {"objective": "multiclass", "num_class": k, "verbosity": -1, "seed": seed, "num_leaves": 4}
    booster = lgb.train(params, lgb.Dataset(X, label=y), num_boost_round=100)
    out.mkdir(parents=True, exist_ok=True)
    return stacking.save(booster, out)


def build_paper_models(
    root: Path, texts: list[str], codes: list[int], vocab: int
) -> tuple[Path, dict[str, Path]]:
    """(ensemble folder, level-1 folders) of paper-size architectures with random weights."""
    from mmpc import ensemble

    folders = {n: paper_text_folder(root / n, n, texts, codes, vocab) for n in ("flaubert", "camembert")}
    folders["seresnext"] = paper_image_folder(root / "seresnext", codes)
    folders["fusion"] = paper_fusion_folder(root / "fusion", dict(folders), codes)
    booster = random_booster(root / "booster", list(folders), codes)
    ens = ensemble.build(root / "ensemble", folders, dict.fromkeys(folders, "0"), booster, codes, 3, 64)
    return ens, folders


def paper_size(
    requests_frame: pd.DataFrame, texts: list[str], codes: list[int], root: Path, args: argparse.Namespace
) -> dict[str, float]:
    """EnsemblePredictor against four Level1Predictor's + booster, paper-size models, in process."""
    import torch

    from mmpc import requests as mreq
    from mmpc import stacking
    from mmpc.ensemble import EnsemblePredictor
    from mmpc.models.runners import Level1Predictor

    t0 = time.perf_counter()
    ens_dir, folders = build_paper_models(root, texts, codes, args.paper_vocab)
    # One intra-op thread by default: on these shared 2-core machines two threads make every op wait
    # for a descheduled thread whenever another job runs (seconds per product), which drowns the ratio.
    torch.set_num_threads(args.paper_threads)
    ens = EnsemblePredictor(ens_dir)
    level1 = {n: Level1Predictor(f) for n, f in folders.items()}
    booster = stacking.load(ens_dir)
    members = list(folders)
    built = time.perf_counter() - t0
    log(f"paper-size models built and loaded in {built:.0f} s")

    def naive(frame: pd.DataFrame) -> np.ndarray:
        req = mreq.parse(frame)
        probs = {n: p.predict_proba(req.texts, req.images) for n, p in level1.items()}
        return booster.predict(stacking.features(probs, members, codes))

    frames = batches(requests_frame, args.paper_batch)[: args.paper_batches + 1]
    frames[0] = frames[0].head(2)  # a small warm-up: paper-size batches take seconds each on 2 cores
    calls = {"ensemble": lambda f: ens.predict(mreq.parse(f)), "naive": naive}
    speed = interleaved(calls, frames, args.paper_max_s)
    params = {n: sum(p.numel() for p in r.model.parameters()) for n, r in {**ens.texts, **ens.images}.items()}
    tokens = [len(ids) for ids in ens.texts["camembert"].tokenize(mreq.parse(requests_frame).texts)]
    log(f"paper-size parameters: {params}; torch threads {torch.get_num_threads()}")
    return {
        "ensemble": speed["ensemble"],
        "naive": speed["naive"],
        "products": speed["products"],
        "build_s": built,
        "params_m": {n: round(v / 1e6, 1) for n, v in params.items()},
        "median_tokens": float(np.median(tokens)),
        "threads": float(torch.get_num_threads()),
    }


# -------------------------------------------------------------------------------------------- report


def table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("measure", "ensemble", "naive", "ensemble/naive")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    fmt = "| " + " | ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt.format(*head), sep, *(fmt.format(*r) for r in rows)])


def num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, help="reuse this store (e.g. demo/), or build into it when empty")
    p.add_argument("--catalog", type=Path, help="catalog for the requests (default: <workdir>/catalog)")
    p.add_argument("--recipe", default="demo", help="recipe whose splits pick the test rows")
    p.add_argument(
        "--alias", default="champion", help="ensemble alias to benchmark (falls back to candidate)"
    )
    p.add_argument("--size", type=int, default=1200, help="demo catalog size when building")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--batch", type=int, default=64, help="products per in-process call")
    p.add_argument("--batches", type=int, default=16, help="in-process timed batches (at most)")
    p.add_argument("--max-s", type=float, default=30, help="time cap of each timed loop, seconds")
    p.add_argument("--no-http", action="store_true")
    p.add_argument("--no-naive-http", action="store_true", help="HTTP for the ensemble only")
    p.add_argument(
        "--no-thread-variant", action="store_true", help="skip the ensemble server with MMPC_TORCH_THREADS=1"
    )
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="HTTP measurements alternate in this many rounds")
    p.add_argument("--http-batch", type=int, default=16)
    p.add_argument("--http-requests", type=int, default=120, help="batched requests per throughput run")
    p.add_argument("--single", type=int, default=300, help="sequential single-product requests (ensemble)")
    p.add_argument("--naive-single", type=int, default=100, help="sequential single-product requests (naive)")
    p.add_argument("--paper-size", action="store_true", help="also time paper-size models (in process)")
    p.add_argument("--paper-batch", type=int, default=8)
    p.add_argument("--paper-batches", type=int, default=6)
    p.add_argument("--paper-max-s", type=float, default=120)
    p.add_argument("--paper-vocab", type=int, default=30000, help="WordPiece vocabulary trained on the text")
    p.add_argument(
        "--paper-threads", type=int, default=1, help="torch intra-op threads for the paper-size run"
    )
    return p.parse_args(argv)


def prepare_store(args: argparse.Namespace, scratch: Path) -> tuple[Store, float]:
    workdir = (args.workdir or scratch / "work").resolve()
    catalog = (args.catalog or workdir / "catalog").resolve()
    t0 = time.perf_counter()
    if not (workdir / "mlflow.db").is_file():
        log(f"building the models: demo catalog of {args.size} products, retrain flow -> {workdir}")
        catalog = build_store(workdir, args.size, args.seed)
    built = time.perf_counter() - t0
    store = open_store(workdir, catalog, scratch, args.alias)
    log(f"mmpc-ensemble v{store.ensemble_version}, members {store.versions}, built in {built:.0f} s")
    return store, built


def bench_inprocess(store: Store, frame: pd.DataFrame, args: argparse.Namespace) -> tuple[dict, Any, Naive]:
    import mlflow
    import torch

    ens_model = mlflow.pyfunc.load_model(str(store.ensemble_dir))
    naive = load_naive(store)
    frames = batches(frame, args.batch)[: args.batches + 1]
    speed = interleaved({"ensemble": ens_model.predict, "naive": naive.predict}, frames, args.max_s)
    speed["agreement"] = agreement(ens_model, naive, frames[0])
    speed["threads"] = float(torch.get_num_threads())  # set by the pyfuncs' load_context
    return speed, ens_model, naive


@dataclass
class HttpTarget:
    client: Client
    servers: list[Server]  # whose CPU time is counted
    n_single: int  # sequential single-product requests, over all rounds
    products: int = 0
    seconds: float = 0.0
    cpu_s: float | None = 0.0
    lat: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | None]:
        lat = np.asarray(self.lat)
        return {
            "products_s": self.products / self.seconds if self.seconds else None,
            "cpu_ms_per_product": None if self.cpu_s is None else self.cpu_s * 1000 / max(self.products, 1),
            "p50": pct(lat, 50),
            "p90": pct(lat, 90),
            "p99": pct(lat, 99),
            "n_single": float(len(lat)),
        }


def measure_round(target: HttpTarget, big: list[bytes], single: list[bytes], rounds: int, args) -> None:
    """One round: throughput with concurrent clients (CPU of servers + this client), then latency."""
    pgids = [s.proc.pid for s in target.servers]
    cpu0, own0 = group_cpu_s(pgids), time.process_time()
    products, seconds = http_throughput(
        client=target.client,
        bodies=big,
        per_body=args.http_batch,
        clients=args.clients,
        max_s=args.max_s / rounds,
    )
    cpu1, own1 = group_cpu_s(pgids), time.process_time()
    target.products += products
    target.seconds += seconds
    if cpu0 is None or cpu1 is None or target.cpu_s is None:
        target.cpu_s = None
    else:
        target.cpu_s += cpu1 - cpu0 + own1 - own0
    n = max(1, target.n_single // rounds)
    target.lat += latencies(
        target.client, single, n, warmup=max(3, n // 15), max_s=args.max_s / rounds
    ).tolist()


def bench_http(
    store: Store, frame: pd.DataFrame, naive: Naive, args: argparse.Namespace, logdir: Path
) -> dict[str, dict]:
    """The ensemble server (default torch threads, and MMPC_TORCH_THREADS=1) and the naive servers,
    measured in alternating rounds so that a background load shift hits them alike."""
    ens_uri = f"models:/mmpc-ensemble/{store.ensemble_version}"
    specs: dict[str, tuple[str, dict]] = {"ensemble": (ens_uri, {})}
    if not args.no_thread_variant:
        specs["ensemble-t1"] = (ens_uri, {"MMPC_TORCH_THREADS": "1"})
    if not args.no_naive_http:
        specs |= {n: (f"models:/mmpc-{n}/{store.versions[n]}", {}) for n in store.members}
    big = [payload(b) for b in batches(frame, args.http_batch)][: args.http_requests]
    single = [payload(frame.iloc[[i]]) for i in range(min(len(frame), 64))]
    t0 = time.perf_counter()
    with served(specs, store.uri, logdir) as servers:
        log(f"{len(servers)} server(s) ready in {time.perf_counter() - t0:.0f} s")
        targets = {
            name: HttpTarget(ensemble_client(servers[name].url), [servers[name]], args.single)
            for name in ("ensemble", "ensemble-t1")
            if name in servers
        }
        if not args.no_naive_http:
            urls = {n: servers[n].url for n in store.members}
            client = naive_client(urls, store.members, store.codes, naive.booster)
            targets["naive"] = HttpTarget(client, [servers[n] for n in store.members], args.naive_single)
        for r in range(args.rounds):
            for target in targets.values():
                measure_round(target, big[r :: args.rounds], single, args.rounds, args)
        out = {name: t.summary() for name, t in targets.items()}
    for name, figures_ in out.items():
        log(f"HTTP {name}: {figures_}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mmpc-bench-serve-") as tmp, stdout_to_stderr():
        scratch = Path(tmp)
        store, built = prepare_store(args, scratch)
        n_rows = max(args.batch * (args.batches + 1), args.http_batch * args.http_requests, 64)
        frame = request_rows(store.catalog, args.recipe, n_rows)

        log(f"in process: ensemble pyfunc vs {len(store.members)} level-1 pyfuncs + booster")
        inproc, ens_model, naive = bench_inprocess(store, frame, args)
        singles = [frame.iloc[[i]].reset_index(drop=True) for i in range(16)]
        stages = stage_breakdown(ens_model, singles, rounds=120)
        stages |= serving_breakdown(ens_model, singles, rounds=60)
        profile = cprofile_top(ens_model, singles, rounds=60)

        http: dict[str, dict] = {}
        if not args.no_http:
            log("over HTTP: mlflow models serve")
            http = bench_http(store, frame, naive, args, scratch)

        paper: dict[str, float] = {}
        if args.paper_size:
            log("paper-size architectures, random weights, in process")
            del ens_model, naive
            texts = pd.concat([frame["designation"], frame["description"].fillna("")]).tolist()
            paper = paper_size(frame, texts, store.codes, scratch / "paper", args)
    total = time.perf_counter() - started
    load = (load_start, os.getloadavg()[0])
    report(args, inproc, http, paper, stages, profile, built, total, load)
    return 0


def speed_rows(args: argparse.Namespace, inproc: dict, http: dict[str, dict], paper: dict) -> list[tuple]:
    """(measure, ensemble, naive, ensemble's advantage) rows of the summary table."""
    rows = [
        (
            f"in process, products/s (batches of {args.batch})",
            num(inproc["ensemble"]),
            num(inproc["naive"]),
            num(ratio(inproc["ensemble"], inproc["naive"]), 2),
        )
    ]
    ens, nai, t1 = http.get("ensemble", {}), http.get("naive", {}), http.get("ensemble-t1", {})
    if ens:
        rows += [
            (
                f"HTTP, products/s ({args.clients} clients, batches of {args.http_batch})",
                num(ens["products_s"]),
                num(nai.get("products_s")),
                num(ratio(ens["products_s"], nai.get("products_s")), 2),
            ),
            (
                "HTTP, CPU ms per product (servers + client)",
                num(ens["cpu_ms_per_product"], 2),
                num(nai.get("cpu_ms_per_product"), 2),
                num(ratio(nai.get("cpu_ms_per_product"), ens["cpu_ms_per_product"]), 2),
            ),
        ]
        for q in ("p50", "p90", "p99"):
            rows.append(
                (
                    f"HTTP, 1 product, {q} ms",
                    num(ens[q]),
                    num(nai.get(q)),
                    num(ratio(nai.get(q), ens[q]), 2),
                )
            )
    if t1:
        rows += [
            ("HTTP, MMPC_TORCH_THREADS=1: products/s", num(t1["products_s"]), "-", "-"),
            (
                "HTTP, MMPC_TORCH_THREADS=1: 1 product p50 / p99 ms",
                f"{t1['p50']:.1f} / {t1['p99']:.1f}",
                "-",
                "-",
            ),
        ]
    if paper:
        rows.append(
            (
                f"paper size, in process, products/s (batches of {args.paper_batch})",
                num(paper["ensemble"], 2),
                num(paper["naive"], 2),
                num(ratio(paper["ensemble"], paper["naive"]), 2),
            )
        )
    return rows


def figures(inproc: dict, http: dict[str, dict], paper: dict, built: float, total: float) -> dict:
    ens, nai, t1 = http.get("ensemble", {}), http.get("naive", {}), http.get("ensemble-t1", {})
    out = {
        "inprocess_ensemble_products_s": inproc["ensemble"],
        "inprocess_naive_products_s": inproc["naive"],
        "ratio": ratio(inproc["ensemble"], inproc["naive"]),
        "http_ensemble_products_s": ens.get("products_s"),
        "http_naive_products_s": nai.get("products_s"),
        "http_ratio": ratio(ens.get("products_s"), nai.get("products_s")),
        "p50_ms": ens.get("p50"),
        "p99_ms": ens.get("p99"),
        "http_ensemble_cpu_ms_per_product": ens.get("cpu_ms_per_product"),
        "http_naive_cpu_ms_per_product": nai.get("cpu_ms_per_product"),
        "naive_p50_ms": nai.get("p50"),
        "naive_p99_ms": nai.get("p99"),
        "threads1_http_products_s": t1.get("products_s"),
        "threads1_p50_ms": t1.get("p50"),
        "threads1_p99_ms": t1.get("p99"),
        "paper_size_ensemble_products_s": paper.get("ensemble"),
        "paper_size_naive_products_s": paper.get("naive"),
        "paper_size_ratio": ratio(paper.get("ensemble"), paper.get("naive")),
        "agreement": inproc["agreement"],
        "torch_threads": inproc["threads"],
        "build_s": built,
        "total_s": total,
    }
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def report(
    args: argparse.Namespace,
    inproc: dict,
    http: dict[str, dict],
    paper: dict,
    stages: dict[str, float],
    profile: str,
    built: float,
    total: float,
    load: tuple[float, float],
) -> None:
    print(table(speed_rows(args, inproc, http, paper)))
    print("(last column: how many times better the ensemble is; CPU and latency: naive / ensemble)")
    print(f"\nensemble and naive agree on {inproc['agreement']:.1%} of a batch's predicted codes")
    print(
        f"torch intra-op threads in process: {inproc['threads']:.0f} (MMPC_TORCH_THREADS, else min(4, CPUs))"
    )
    print(
        f"models built in {built:.0f} s; whole run {total:.0f} s; 1-min load average {load[0]:.1f} at the "
        f"start, {load[1]:.1f} at the end, on {os.cpu_count()} CPU(s) (this run counts, far above: others)"
    )
    if http and args.no_naive_http:
        print("naive over HTTP skipped (--no-naive-http)")
    if "naive" in http:
        print("naive over HTTP: one server per level-1 model, called in turn; the booster runs in the client")
    if paper:
        print(
            f"paper size: {paper['products']:.0f} timed products per side (a short run on 2 CPU cores), "
            f"models built in {paper['build_s']:.0f} s, parameters (millions) {paper['params_m']}, "
            f"median {paper['median_tokens']:.0f} tokens per product, torch threads {paper['threads']:.0f}"
        )
    print("\nsingle-product request in process, median ms per stage:")
    width = max(len(k) for k in stages)
    for name, ms in stages.items():
        print(f"  {name.ljust(width)}  {ms:8.2f}")
    print("\ncProfile, single-product pyfunc predict (top by own time):")
    print(profile)
    print(json.dumps(figures(inproc, http, paper, built, total) | {"load_avg": [round(x, 2) for x in load]}))


if __name__ == "__main__":
    sys.exit(main())
