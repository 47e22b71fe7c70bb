"""`BidirectionalLSTM` over right-padded sequences, and masked mean / max pooling over time: the small encoders that
task models put on top of a frozen representation (ELMo's feature-based use; any family's taggers).

Shape legend: B batch, T time, D input width, U cells per direction.

The forward LSTM reads positions 0 .. T-1; the backward one reads each sequence reversed within its own length
(`tf.reverse_sequence`), so it never reads the padding on the right, and its outputs are reversed back to line up
with the positions. Both are `ProjectedLSTM`s (no Python per time step; masked steps output zeros).
"""

import keras
import tensorflow as tf

from zoo.layers.projected_lstm import ProjectedLSTM

POOLINGS = ("mean", "max", "mean_max")


@keras.saving.register_keras_serializable(package="zoo")
class BidirectionalLSTM(keras.layers.Layer):
    """[forward LSTM; backward LSTM] outputs, [B, T, 2U], zero at padding (see the module docstring).

    Args:
      units: U, cells of each direction (no projection, no clipping: a plain LSTM).

    Call args:
      inputs: float [B, T, D]; mask: int/bool [B, T] (1 = real step, real steps first) or None.

    Example:
      >>> import tensorflow as tf
      >>> from zoo.layers.bilstm import BidirectionalLSTM
      >>> BidirectionalLSTM(4)(tf.zeros([2, 5, 3]), mask=tf.sequence_mask([5, 2], 5)).shape
      TensorShape([2, 5, 8])
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.forward_lstm = ProjectedLSTM(self.units, name="forward")
        self.backward_lstm = ProjectedLSTM(self.units, name="backward")
        self.supports_masking = True  # the mask is an argument of `call`; nothing is attached to the outputs

    def build(self, input_shape):
        self.forward_lstm.build(input_shape)
        self.backward_lstm.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None):
        if mask is None:
            mask = tf.ones(tf.shape(inputs)[:2], tf.bool)
        mask = tf.cast(mask, tf.bool)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # [B]
        forward, _ = self.forward_lstm(inputs, mask=mask)
        reversed_inputs = tf.reverse_sequence(inputs, lengths, seq_axis=1, batch_axis=0)
        backward, _ = self.backward_lstm(reversed_inputs, mask=mask)  # right padding stays on the right
        backward = tf.reverse_sequence(backward, lengths, seq_axis=1, batch_axis=0)
        return tf.concat([forward, backward], axis=-1)  # [B, T, 2U]

    def compute_mask(self, inputs, mask=None):
        return None  # callers pass the mask on explicitly (pooling, the next layer)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:2]) + (2 * self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config


def masked_pool(x, mask, pooling="mean"):
    """x float [B, T, D], mask int/bool [B, T] -> [B, D] (mean_max: [B, 2D]) over the real steps only.

    mean: the average of the real steps (0 for a row without any); max: their element-wise maximum (0 for a row
    without any); mean_max: both, concatenated.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}.")
    keep = tf.cast(mask, tf.bool)[:, :, None]  # [B, T, 1]
    parts = []
    if pooling in ("mean", "mean_max"):
        weights = tf.cast(keep, x.dtype)
        count = tf.reduce_sum(weights, axis=1)  # [B, 1]
        parts.append(tf.math.divide_no_nan(tf.reduce_sum(x * weights, axis=1), count))
    if pooling in ("max", "mean_max"):
        lowest = tf.constant(x.dtype.min, x.dtype)
        best = tf.reduce_max(tf.where(keep, x, lowest), axis=1)  # [B, D]
        any_real = tf.reduce_any(keep, axis=1)  # [B, 1]
        parts.append(tf.where(any_real, best, tf.zeros_like(best)))
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
