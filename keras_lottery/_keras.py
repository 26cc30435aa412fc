"""The one place that imports Keras 2 (tf_keras) and checks a model's flavour.

tfmot 0.8 prunes tf_keras models only, while TensorFlow >= 2.16 ships Keras 3
as `tf.keras`. Everything in keras_lottery imports `keras` from here, so the
flavour question is answered once.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras as keras  # noqa: E402  (the env var must be set first)

__all__ = ["keras", "check_tf_keras_model"]


def check_tf_keras_model(model, what="model"):
    """Raises a clear error unless `model` is a tf_keras (Keras 2) model.

    Args:
      model: the object a user passed in.
      what: how to name it in the error message.

    Raises:
      TypeError: for a Keras 3 model (the default `tf.keras` in TF >= 2.16)
        or anything that is not a Keras model at all.
    """
    if isinstance(model, keras.Model):
        return
    module = type(model).__module__ or ""
    if module.split(".")[0] == "keras" or module.startswith("keras."):
        raise TypeError(
            f"The {what} is a Keras 3 model ({type(model).__name__} from "
            f"`{module}`), but tensorflow-model-optimization prunes Keras 2 "
            "(tf_keras) models only. Convert it with "
            "`keras_lottery.convert.to_tf_keras(model)` (`IMP.wrap` and "
            "`wrap_model` do this for you: built-in layers only, outputs "
            "checked equal), build it with `import tf_keras as keras`, or set "
            "TF_USE_LEGACY_KERAS=1 before importing TensorFlow so that "
            "`tf.keras` is tf_keras."
        )
    raise TypeError(
        f"Expected a tf_keras Model for the {what}, got {type(model).__name__} "
        f"({model!r:.80})."
    )
