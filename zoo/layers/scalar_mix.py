"""`ScalarMix`: a learned, softmax-normalised weighted sum of K same-shaped representations, times a scale gamma
(ELMo's task-specific mix, Peters et al. 2018 eq. 1; allennlp `ScalarMix`, bilm-tf `weight_layers`).

Shape legend: K representations, B batch, T length, D width.

    mix = gamma * sum_k softmax(w)_k * h_k            w [K] starts at 0 (an even mix), gamma starts at 1

With `do_layer_norm`, each h_k is first normalised by ONE mean and variance over all its unmasked elements in the
batch (allennlp's `_do_layer_norm`: not per token), with allennlp's epsilon (`tiny_value_of_dtype(float32)` = 1e-13) inside the square root.
"""

import keras
import tensorflow as tf

LAYER_NORM_EPSILON = 1e-13


@keras.saving.register_keras_serializable(package="zoo")
class ScalarMix(keras.layers.Layer):
    """gamma * sum_k softmax(w)_k * h_k over K representations (see the module docstring).

    Args:
      num_representations: K.
      do_layer_norm: normalise each representation over the batch's unmasked elements first (needs the mask).
      l2_coefficient: adds l2_coefficient * sum(w^2) to the layer's losses (bilm-tf's `l2_coef`); 0: none.
      trainable: False freezes w and gamma at an even mix and 1.

    Call args:
      representations: list of K float [B, T, D] (any equal shapes [..., D] without the mask).
      mask: int/bool [B, T] or None (1 = real position); required with do_layer_norm.

    Returns:
      float [B, T, D] in the compute dtype.

    Example:
      >>> import tensorflow as tf
      >>> from zoo.layers.scalar_mix import ScalarMix
      >>> mix = ScalarMix(3)
      >>> round(float(mix([tf.ones([2, 4, 8]), tf.zeros([2, 4, 8]), tf.ones([2, 4, 8])])[0, 0, 0]), 4)  # (1 + 0 + 1) / 3
      0.6667
    """

    def __init__(self, num_representations, do_layer_norm=False, l2_coefficient=0.0, trainable=True, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.num_representations = int(num_representations)
        self.do_layer_norm = bool(do_layer_norm)
        self.l2_coefficient = float(l2_coefficient)
        self.supports_masking = True

    def build(self, input_shape=None):
        self.scalar_weights = self.add_weight(name="scalar_weights", shape=(self.num_representations,),
                                              initializer="zeros", autocast=False)
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="ones", autocast=False)
        self.built = True

    def normalized_weights(self):
        """softmax(w): float32 [K], summing to one."""
        return tf.nn.softmax(tf.cast(self.scalar_weights, tf.float32))

    def call(self, representations, mask=None):
        if isinstance(mask, (list, tuple)):  # Keras hands one mask per representation; they are the same
            mask = next((m for m in mask if m is not None), None)
        if len(representations) != self.num_representations:
            raise ValueError(f"ScalarMix expects {self.num_representations} representations, got {len(representations)}.")
        if self.do_layer_norm and mask is None:
            raise ValueError("ScalarMix(do_layer_norm=True) needs the mask of the representations.")
        if self.l2_coefficient > 0.0:
            self.add_loss(self.l2_coefficient * tf.reduce_sum(tf.square(tf.cast(self.scalar_weights, tf.float32))))
        weights = self.normalized_weights()
        dtype = self.compute_dtype
        mix = None
        for k, h in enumerate(representations):
            h = tf.cast(h, tf.float32)
            if self.do_layer_norm:
                h = _masked_layer_norm(h, mask)
            term = weights[k] * h
            mix = term if mix is None else mix + term
        return tf.cast(tf.cast(self.gamma, tf.float32) * mix, dtype)

    def compute_mask(self, inputs, mask=None):
        return mask if not isinstance(mask, (list, tuple)) else mask[0]

    def get_config(self):
        config = super().get_config()
        config.update(num_representations=self.num_representations, do_layer_norm=self.do_layer_norm,
                      l2_coefficient=self.l2_coefficient)
        return config


def _masked_layer_norm(h, mask):
    """(h - mean) / sqrt(var + eps), one mean and variance over the unmasked elements of h [B, T, D] (float32)."""
    mask = tf.cast(mask, tf.float32)[..., None]  # [B, T, 1]
    count = tf.maximum(tf.reduce_sum(mask) * tf.cast(tf.shape(h)[-1], tf.float32), 1.0)  # unmasked elements
    mean = tf.reduce_sum(h * mask) / count
    variance = tf.reduce_sum(tf.square((h - mean) * mask)) / count
    return (h - mean) / tf.sqrt(variance + LAYER_NORM_EPSILON)
