"""`ProjectedLSTM`: an LSTM with a projected output and cell / projection clipping, over a whole sequence.

Shape legend: B batch, T time, D input width, U cells (units), P projection (output) width, G = 4U gates.

The maths of TF1's `LSTMCell(num_units=U, num_proj=P, cell_clip, proj_clip)` (no peepholes), which bilm-tf's
ELMo uses:

    i, j, f, o = split([x_t, h_{t-1}] @ W + b, 4)          # gate order i, j, f, o
    c_t = clip(sigmoid(f + forget_bias) * c_{t-1} + sigmoid(i) * tanh(j), cell_clip)
    h_t = clip((sigmoid(o) * tanh(c_t)) @ W_P, projection_clip)

with W split into `input_kernel` [D, G] (x's rows) and `recurrent_kernel` [P, G] (h's rows), so that x @ W_x for all
T steps is one [B*T, D] @ [D, G] matmul before the recurrence, and each step does only h @ W_h ([B, P] @ [P, G]).
The forget bias is added at run time (TF1's convention: stored biases exclude it), once, with the bias, to the
hoisted input gates. The recurrence (zoo/layers/lstm_recurrence.py) is one `tf.while_loop` with a hand-written
backward loop (no Python per time step at run time; XLA compiles both), the gate maths in float32 whatever the
compute dtype (bf16 matmuls, float32 state). Masked steps (padding) keep the state and output zeros, as TF1's
`dynamic_rnn(sequence_length=...)` does, so the final state is each sequence's state at its last real step.
"""

import math

import keras
import tensorflow as tf

from zoo.layers import lstm_recurrence


@keras.saving.register_keras_serializable(package="zoo")
class ProjectedLSTM(keras.layers.Layer):
    """An LSTM layer with a linear projection of its output (TF1 `LSTMCell` semantics; see the module docstring).

    Args:
      units: U, cells.
      projection_dim: P, width of the projected output and recurrent state h; None: no projection (P = U, and
        no projection clip, as TF1).
      cell_clip: clip c to [-cell_clip, cell_clip]; None or 0: no clip.
      projection_clip: clip the projected h likewise; None or 0: no clip.
      forget_bias: added to the forget gate's pre-activation at run time (1.0, TF1's default).
      kernel_initializer: of input_kernel and recurrent_kernel; None: TF1's default, glorot-uniform over the
        concatenated [D + P, G] kernel.
      projection_initializer: of projection_kernel; None: glorot-uniform over [U, P].
      manual_backward: True (default): the hand-written backward loop (`lstm_recurrence.recurrence`); False:
        TensorFlow's gradient of the loop (`lstm_recurrence.autodiff`, the reference). Same forward pass.

    Call args:
      inputs: float [B, T, D].
      mask: bool/int [B, T] or None (1 = real step).
      initial_state: (c float [B, U], h float [B, P]) or None (zeros).

    Returns:
      (outputs [B, T, P] in the compute dtype, zero at masked steps, (c [B, U], h [B, P]) float32 final state).

    Example:
      >>> import tensorflow as tf
      >>> from zoo.layers.projected_lstm import ProjectedLSTM
      >>> lstm = ProjectedLSTM(64, projection_dim=16, cell_clip=3.0, projection_clip=3.0)
      >>> outputs, (c, h) = lstm(tf.zeros([2, 5, 8]))
      >>> outputs.shape, c.shape, h.shape
      (TensorShape([2, 5, 16]), TensorShape([2, 64]), TensorShape([2, 16]))
    """

    def __init__(self, units, projection_dim=None, cell_clip=None, projection_clip=None, forget_bias=1.0,
                 kernel_initializer=None, projection_initializer=None, manual_backward=True, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.cell_clip = cell_clip
        self.projection_clip = projection_clip
        self.forget_bias = float(forget_bias)
        self.manual_backward = bool(manual_backward)
        self.kernel_initializer = keras.initializers.get(kernel_initializer) if kernel_initializer else None
        self.projection_initializer = keras.initializers.get(projection_initializer) if projection_initializer else None
        self.supports_masking = True  # the mask is an argument of `call`; nothing is attached to the outputs

    @property
    def output_dim(self):
        """P: the width of h and of the outputs."""
        return self.projection_dim or self.units

    @property
    def state_size(self):
        return (self.units, self.output_dim)

    def build(self, input_shape):
        input_dim = int(input_shape[-1])
        gates = 4 * self.units
        kernel_init = self.kernel_initializer or keras.initializers.RandomUniform(
            -math.sqrt(6.0 / (input_dim + self.output_dim + gates)), math.sqrt(6.0 / (input_dim + self.output_dim + gates)))
        self.input_kernel = self.add_weight(name="input_kernel", shape=(input_dim, gates), initializer=kernel_init)
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(self.output_dim, gates),
                                                initializer=kernel_init)
        self.bias = self.add_weight(name="bias", shape=(gates,), initializer="zeros")
        if self.projection_dim:
            self.projection_kernel = self.add_weight(
                name="projection_kernel", shape=(self.units, self.projection_dim),
                initializer=self.projection_initializer or "glorot_uniform")
        self.built = True

    @property
    def state_dtype(self):
        """The dtype of c, h and the gate maths: float32, or float64 for a float64 layer."""
        return tf.float64 if tf.as_dtype(self.compute_dtype) == tf.float64 else tf.float32

    def get_initial_state(self, batch_size):
        return (tf.zeros([batch_size, self.units], self.state_dtype),
                tf.zeros([batch_size, self.output_dim], self.state_dtype))

    def call(self, inputs, mask=None, initial_state=None, training=False):
        dtype, state_dtype = self.compute_dtype, self.state_dtype
        x = tf.cast(inputs, dtype)
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        may_be_empty = inputs.shape[1] is None or inputs.shape[1] == 0
        if may_be_empty:
            # An empty TensorArray cannot stack with a dynamic batch, so T = 0 runs one masked step instead.
            mask = tf.ones([batch, length], tf.bool) if mask is None else tf.cast(mask, tf.bool)
            x, mask = tf.cond(length > 0, lambda: (x, mask),
                              lambda: (tf.zeros([batch, 1, x.shape[-1]], dtype), tf.zeros([batch, 1], tf.bool)))
        # The input half of every step's gates in one matmul, time-major: [T*B, D] @ [D, G] -> [T, B, G]; the
        # bias and the forget bias (on the f columns) are added here once, not per step.
        x_time_major = tf.transpose(x, [1, 0, 2])  # [T, B, D]
        steps = tf.shape(x)[1]  # T, or 1 for T = 0
        input_gates = tf.matmul(tf.reshape(x_time_major, [-1, x.shape[-1]]), tf.cast(self.input_kernel, dtype))
        forget_bias = tf.constant([0.0] * (2 * self.units) + [self.forget_bias] * self.units + [0.0] * self.units,
                                  state_dtype)
        input_gates = tf.cast(input_gates, state_dtype) + (tf.cast(self.bias, state_dtype) + forget_bias)
        input_gates = tf.reshape(input_gates, [steps, batch, 4 * self.units])  # [T, B, G]
        if initial_state is None:
            initial_state = self.get_initial_state(batch)
        c0, h0 = (tf.cast(s, state_dtype) for s in initial_state)
        keep = None if mask is None else tf.transpose(tf.cast(mask, tf.bool))[:, :, None]  # [T, B, 1]
        run = lstm_recurrence.recurrence if self.manual_backward else lstm_recurrence.autodiff
        outputs, c, h = run(input_gates, c0, h0, tf.cast(self.recurrent_kernel, dtype),
                            tf.cast(self.projection_kernel, dtype) if self.projection_dim else None,
                            keep, self.cell_clip, self.projection_clip)
        outputs = tf.cast(tf.transpose(outputs, [1, 0, 2]), dtype)  # [B, T, P]
        if may_be_empty:
            outputs = outputs[:, :length]
        if inputs.shape.rank == 3:
            outputs = tf.ensure_shape(outputs, [inputs.shape[0], inputs.shape[1], self.output_dim])
        return outputs, (c, h)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        return (tuple(input_shape[:2]) + (self.output_dim,), ((batch, self.units), (batch, self.output_dim)))

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, projection_dim=self.projection_dim, cell_clip=self.cell_clip,
            projection_clip=self.projection_clip, forget_bias=self.forget_bias, manual_backward=self.manual_backward,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer) if self.kernel_initializer else None,
            projection_initializer=(keras.initializers.serialize(self.projection_initializer)
                                    if self.projection_initializer else None),
        )
        return config
