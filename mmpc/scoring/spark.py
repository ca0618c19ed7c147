"""The Spark engine: the same job through ``mlflow.pyfunc.spark_udf`` on ``local[N]`` or a cluster.

Spark reads the input (the catalog's CSV, a CSV or a Parquet file), the registered model scores each
Arrow batch in the executors' Python workers (the model carries its own code: executors need no
mmpc), and Spark writes the Parquet parts. The output has the local engine's columns and answers.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from mmpc import packaging
from mmpc.scoring.local import OUTPUT_COLUMNS
from mmpc.scoring.parts import Job
from mmpc.scoring.sources import Source
from mmpc.serving_input import IMAGE_ROOT_ENV

log = logging.getLogger(__name__)

NO_TITLE = "no designation (title)"
# The ensemble's answer without SHAP contributions (an optional output that batch jobs do not ask for).
RESULT_TYPE = (
    "prdtypecode long, probability double, top_codes array<long>, top_probabilities array<double>, "
    "image_status string"
)


def session(master: str, chunk_rows: int):
    from pyspark.sql import SparkSession

    if master.startswith("local"):
        # Local workers run this interpreter (its libraries), not whichever python3 is first on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName("mmpc-score")
        # A pandas UDF batch is one request to the model: within its row limit, like a local chunk.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk_rows))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )


def _in_chunks(spark, frame, chunk_rows: int):
    """Rows numbered in input order, then spread over every core a whole chunk at a time: each Arrow
    batch the model sees holds the rows of one local-engine chunk, so both engines give the same
    numbers (a batch's padding and its members' batch statistics are part of the arithmetic). A
    multi-line CSV is one partition as read, and one partition is one Python worker."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StructField, StructType

    numbered = frame.rdd.zipWithIndex().map(lambda pair: (*pair[0], pair[1]))
    schema = StructType([*frame.schema.fields, StructField("row", LongType(), False)])
    frame = spark.createDataFrame(numbered, schema).withColumn("chunk", F.floor(F.col("row") / chunk_rows))
    parts = spark.sparkContext.defaultParallelism
    return frame.repartitionByRange(parts, "chunk").sortWithinPartitions("row")


def read(spark, source: Source, chunk_rows: int):
    """The products as a Spark DataFrame with the request columns, ``productid`` and ``row`` (input
    order), laid out a local-engine chunk at a time."""
    from pyspark.sql import functions as F

    if source.table.suffix == ".parquet":
        frame = spark.read.parquet(str(source.table))
    else:  # RFC 4180 CSV, quoted fields spanning lines, as pandas reads it
        frame = spark.read.csv(str(source.table), header=True, multiLine=True, escape='"', inferSchema=False)
    frame = _in_chunks(spark, frame, chunk_rows)
    if source.catalog_layout:
        image = F.concat(
            F.lit("image_"), F.col("imageid"), F.lit("_product_"), F.col("productid"), F.lit(".jpg")
        )
    elif "image" in frame.columns and source.image_root is not None:
        image = F.when(F.length(F.col("image")) > 0, F.col("image"))
    else:
        image = F.lit(None).cast("string")
    description = F.col("description") if "description" in frame.columns else F.lit(None).cast("string")
    return frame.select(
        F.col("row"),
        F.col("productid").cast("long").alias("productid"),
        F.col("designation").cast("string").alias("designation"),
        description.cast("string").alias("description"),
        image.cast("string").alias("image"),
    )


def _ensemble_answer(p) -> list:
    from pyspark.sql import functions as F

    names = ("prdtypecode", "probability", "top_codes", "top_probabilities", "image_status")
    return [p[n].alias(n) for n in names] + [F.lit(None).cast("string").alias("error")]


def _level1_answer(p, codes: list[str], top_k: int) -> list:
    """A level-1 model's per-code probabilities as the ensemble's columns (``local.level1_answer``)."""
    from pyspark.sql import functions as F

    pairs = F.array(*[F.struct(p[c].alias("p"), F.lit(int(c)).cast("long").alias("c")) for c in codes])
    answered = ~F.isnan(p[codes[0]])  # an image model without a photo answers NaN in every column
    top = F.slice(F.sort_array(pairs, asc=False), 1, top_k)
    empty_codes, empty_probs = F.array().cast("array<long>"), F.array().cast("array<double>")
    return [
        F.when(answered, top[0]["c"]).alias("prdtypecode"),
        F.when(answered, top[0]["p"]).alias("probability"),
        F.when(answered, F.transform(top, lambda x: x["c"])).otherwise(empty_codes).alias("top_codes"),
        F.when(answered, F.transform(top, lambda x: x["p"]))
        .otherwise(empty_probs)
        .alias("top_probabilities"),
        F.lit("not_reported").alias("image_status"),
        F.lit(None).cast("string").alias("error"),
    ]


def _udf(spark, model_uri: str, source: Source, job: Job, model_config: dict[str, Any]):
    """(the model as a Spark UDF, its output columns): the ensemble's struct, or one probability
    column per code for a level-1 model."""
    import mlflow

    outputs = mlflow.models.get_model_info(model_uri).signature.outputs.input_names()
    ensemble = "prdtypecode" in outputs
    with packaging.own_imports():
        udf = mlflow.pyfunc.spark_udf(
            spark,
            model_uri,
            result_type=RESULT_TYPE if ensemble else None,
            env_manager="local",
            params={"top_k": job.top_k} if ensemble else None,
            extra_env={IMAGE_ROOT_ENV: str(source.image_root)} if source.image_root else None,
            model_config=model_config,
        )
    return udf, None if ensemble else outputs


def score(
    spark, model_uri: str, source: Source, job: Job, out: Path, model_config: dict[str, Any]
) -> tuple[int, Path]:
    """Scores every product into a staging folder next to ``out`` (Spark's part files, in input
    order); returns the rows written and the folder."""
    from pyspark.sql import functions as F

    udf, codes = _udf(spark, model_uri, source, job, model_config)
    products = read(spark, source, job.chunk_rows)
    titled = F.length(F.trim(F.coalesce(F.col("designation"), F.lit("")))) > 0
    p = udf(F.struct(F.col("designation"), F.col("description"), F.col("image")))
    answer = _ensemble_answer(F.col("p")) if codes is None else _level1_answer(F.col("p"), codes, job.top_k)
    scored = products.where(titled).withColumn("p", p).select("row", "productid", *answer)
    untitled = products.where(~titled).select(
        "row",
        "productid",
        F.lit(None).cast("long").alias("prdtypecode"),
        F.lit(None).cast("double").alias("probability"),
        F.array().cast("array<long>").alias("top_codes"),
        F.array().cast("array<double>").alias("top_probabilities"),
        F.when(F.col("image").isNull(), "missing").otherwise("not_read").alias("image_status"),
        F.lit(NO_TITLE).alias("error"),
    )
    result = scored.unionByName(untitled).orderBy("row").drop("row")
    result = result.withColumn("model", F.lit(job.model)).withColumn("version", F.lit(job.version))
    staging = out.with_name(f".{out.name}.spark")
    shutil.rmtree(staging, ignore_errors=True)
    result.select(*OUTPUT_COLUMNS).write.parquet(str(staging))
    return spark.read.parquet(str(staging)).count(), staging
