"""The paper's whole level-1 recipe (Verma et al. 2020, on the Rakuten catalog) projected at the
measured rates: minutes per model and in all, the paper's way and mmpc's."""

from __future__ import annotations

from bench.throughput.common import say
from bench.throughput.settings import Setup

CATALOG_PRODUCTS = 84_916
TRAIN_FRACTION, VALID_FRACTION = 0.75, 0.05
EVAL_COST = 1 / 3  # a forward-only pass costs about a third of forward + backward + step
WAYS = ("paper", "mmpc")


def project_minutes(setup: Setup, text: dict[str, dict], image: dict, way: str) -> dict[str, float]:
    """Minutes of the paper's level-1 recipe at the measured rates: each model trains its recipe's
    epochs on 75 % of the catalog and evaluates 5 % per epoch; fusion needs one forward pass of each
    backbone over every product (it trains on cached embeddings; the same pass gives the stacker its
    level-1 probabilities), then 3 epochs of a tiny head (negligible)."""
    n_train, n_valid = TRAIN_FRACTION * CATALOG_PRODUCTS, VALID_FRACTION * CATALOG_PRODUCTS
    minutes: dict[str, float] = {}
    embed_s = 0.0
    for arch in setup.texts:
        rate = text[arch.name][way]["timing"].samples_s
        minutes[arch.name] = arch.epochs * (n_train + n_valid * EVAL_COST) / rate / 60
        embed_s += CATALOG_PRODUCTS * EVAL_COST / rate
    # Image evaluation still decodes every JPEG: the slower of the loader and a forward-only model.
    img = image[way]
    eval_rate = min(image["loader_only"], img["model_only"] / EVAL_COST)
    minutes[setup.image_name] = setup.image_epochs * (n_train / img["end_to_end"] + n_valid / eval_rate) / 60
    minutes["fusion"] = (embed_s + CATALOG_PRODUCTS / eval_rate) / 60
    minutes["total"] = sum(minutes.values())
    return minutes


def project(setup: Setup, text: dict[str, dict], image: dict) -> dict[str, dict[str, float]]:
    return {way: project_minutes(setup, text, image, way) for way in WAYS}


def report_projection(setup: Setup, projection: dict[str, dict[str, float]]) -> None:
    for way, minutes in projection.items():
        say(f"  {way:5s}: " + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items()))
    if setup.scale != "full":
        say(f"  ({setup.scale} config: these are the scaled-down models' rates, not the real recipe's cost)")


def projection_figures(projection: dict[str, dict[str, float]]) -> dict:
    return {
        "projected_paper_recipe_min_paper_way": projection["paper"]["total"],
        "projected_paper_recipe_min_mmpc_way": projection["mmpc"]["total"],
        "projected_breakdown_min": projection,
    }
