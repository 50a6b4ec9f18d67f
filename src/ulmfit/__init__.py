"""ulmfit: text classifiers from few labels by transfer learning from AWD-LSTM language models."""
__version__ = "0.1.0"


def fit(*args, **kwargs):
    """Train a classifier (ULMFiT; the backbone chosen from the data unless the config names a recipe); see
    `ulmfit.recipes.fit.fit`. Returns the loaded model."""
    from ulmfit.recipes.fit import fit as _fit

    return _fit(*args, **kwargs)


def distill(*args, **kwargs):
    """Distil a teacher (any classifier folder) into an AWD-LSTM student; see `ulmfit.recipes.distill.distill`."""
    from ulmfit.recipes.distill import distill as _distill

    return _distill(*args, **kwargs)


def load(path, runtime="torch", **kwargs):
    """Load a trained classifier folder: `ulmfit.load(path).predict(texts)`; `runtime="onnx"` runs the
    same models in onnxruntime (the `serve` extra)."""
    from ulmfit.recipes.predictor import load as _load

    return _load(path, runtime, **kwargs)


__all__ = ["fit", "distill", "load", "__version__"]
