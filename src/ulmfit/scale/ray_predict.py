"""Batch prediction on Ray Data and Spark: a model folder loaded once per worker, texts in batches.

Ray Data (`pip install 'ulmfit[ray]'`)::

    import ray
    from ulmfit.scale.ray_predict import RayPredictor

    ds = ray.data.read_csv("s3://bucket/texts/")                # any source with a text column
    preds = ds.map_batches(RayPredictor, fn_constructor_kwargs={"model": "/models/tweets"},
                           concurrency=8, batch_size=512, batch_format="pandas")
    preds.write_parquet("s3://bucket/predictions/")

`RayPredictor` is a callable class, so Ray runs it in `concurrency` long-lived actors, each of which
loads the folder once (`__init__`) and then predicts batch after batch (`__call__`). It returns the
batch with the columns `ulmfit predict` writes added: `label` and one `p_<class>` per class.

Spark (`pyspark.ml.functions.predict_batch_udf`, Spark >= 3.4) takes a function that builds the
predictor once per Python worker; `spark_predict_fn(model)` is that function::

    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType
    from ulmfit.scale.ray_predict import spark_predict_fn

    classes = ulmfit.load("/models/tweets").classes              # or the folder's ulmfit.json
    schema = StructType([StructField("label", StringType())] +
                        [StructField(f"p_{c}", FloatType()) for c in classes])
    predict = predict_batch_udf(spark_predict_fn("/models/tweets"), return_type=schema, batch_size=512)
    df.withColumn("pred", predict("text")).select("text", "pred.*")

The model folder must be readable at the same path on every worker (a shared file system, or copy it
there first). Each worker uses `threads` torch threads (default 1: one worker per core scales best).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ulmfit.scale.bulk import load_model, prediction_columns


def _columns(clf, texts) -> dict[str, np.ndarray]:
    """label and p_<class> (float32) for `texts`, as `ulmfit predict` (unrounded)."""
    probs = clf.predict_proba(texts)
    return prediction_columns(probs, clf.classes, clf.label_ids(probs))  # calibration.json's rule


class RayPredictor:
    """A callable class for `ray.data.Dataset.map_batches`: loads `model` once per actor.

    `__call__(batch)` takes a pandas DataFrame or a dict of NumPy arrays (Ray's two batch formats)
    with the texts in `text_col`, and returns the same kind of batch with `label` and `p_<class>`
    columns added. Ray is not imported here: the class is plain Python."""

    def __init__(self, model: str | Path, text_col: str = "text", threads: int | None = 1):
        self.model, self.text_col = str(model), text_col
        self.clf = load_model(str(model), threads)

    def __call__(self, batch):
        if self.text_col not in batch:
            from ulmfit.errors import UlmfitError

            raise UlmfitError(f"batch has no column {self.text_col!r} (columns: {list(batch.keys())}); "
                              f"pass fn_constructor_kwargs={{'model': ..., 'text_col': ...}}")
        cols = _columns(self.clf, list(batch[self.text_col]))
        if hasattr(batch, "assign"):  # a pandas DataFrame
            return batch.assign(**cols)
        return {**batch, **cols}


def spark_predict_fn(model: str | Path, threads: int | None = 1):
    """`make_predict_fn` for Spark's `predict_batch_udf`: called once per Python worker, it loads the
    model and returns `predict(texts: np.ndarray) -> {"label": ..., "p_<class>": ...}`."""
    def make_predict_fn():
        clf = load_model(str(model), threads)

        def predict(texts: np.ndarray) -> dict[str, np.ndarray]:
            return _columns(clf, texts.tolist())
        return predict
    return make_predict_fn
