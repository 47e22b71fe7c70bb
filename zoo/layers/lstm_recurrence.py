"""The recurrence of `ProjectedLSTM` (zoo/layers/projected_lstm.py) over a whole sequence, in two forms.

Shape legend: T time, B batch, U cells, P projection (= U without one), G = 4U gates (order i, j, f, o).

Both take the input half of every step's gates, precomputed (`input_gates` = x @ W_x + b + forget bias, float32
[T, B, G]), and run one `tf.while_loop` over T whose step does h @ W_h ([B, P] @ [P, G]), the gate maths in the
state dtype (float32, or float64), and (m @ W_P) for the projection:

    i, g, f, o = sigmoid(z_i), tanh(z_j), sigmoid(z_f), sigmoid(z_o)      z = input_gates[t] + h @ W_h
    c' = clip(f * c + i * g, cell_clip);  h' = clip((o * tanh(c')) @ W_P, projection_clip)

A masked step (keep[t] False) keeps (c, h) and outputs 0. They differ in the backward pass:
  * `autodiff`: TensorFlow differentiates the loop (the reference);
  * `recurrence` (the default): a hand-written backward (BPTT) loop. The forward loop saves only z, c and h per
    step; the backward first recomputes every activation for all T steps at once (a handful of [T, B, G] ops and
    one [T*B, U] @ [U, P] matmul) and then loops doing only the two matmuls the chain needs, dp @ W_P^T and
    dz @ W_h^T; the weight gradients are two big matmuls after the loop ([P, T*B] @ [T*B, G] and
    [U, T*B] @ [T*B, P]) instead of one small one per step. Measured: benchmarks/elmo_lstm.py.
"""

import tensorflow as tf


def _clip(x, limit):
    return x if not limit else tf.clip_by_value(x, -limit, limit)


def _passes_clip(x, limit, dtype):
    """1 where clip_by_value's gradient passes (|x| <= limit, as TF's _ClipByValueGrad), else 0."""
    if not limit:
        return None
    return tf.cast((x >= -limit) & (x <= limit), dtype)


def _loop(length, body, loop_vars, reverse=False):
    """tf.while_loop over t = 0 .. T-1 (or T-1 .. 0) with loop_vars after t; returns the final loop_vars."""
    start = length - 1 if reverse else tf.constant(0)
    step = -1 if reverse else 1
    condition = (lambda t, *_: t >= 0) if reverse else (lambda t, *_: t < length)
    return tf.while_loop(condition, lambda t, *v: (t + step,) + tuple(body(t, *v)), (start,) + tuple(loop_vars),
                         maximum_iterations=length)[1:]


def _step(z, c, projection_kernel, cell_clip, projection_clip):
    """One step's gate maths: z [B, G], c [B, U] -> (c' [B, U], h' [B, P]) in z's dtype."""
    i, j, f, o = tf.split(z, 4, axis=1)
    new_c = _clip(tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(j), cell_clip)
    new_h = tf.sigmoid(o) * tf.tanh(new_c)
    if projection_kernel is not None:
        new_h = _clip(tf.cast(tf.matmul(tf.cast(new_h, projection_kernel.dtype), projection_kernel), z.dtype), projection_clip)
    return new_c, new_h


def _forward_loop(input_gates, c0, h0, recurrent_kernel, projection_kernel, keep, cell_clip, projection_clip,
                  save=False):
    """The forward loop: (h states [T, B, P], final c, final h[, z [T, B, G], c states [T, B, U] when save])."""
    length = tf.shape(input_gates)[0]
    state_dtype = input_gates.dtype
    arrays = [tf.TensorArray(state_dtype, size=length, element_shape=shape)
              for shape in ([None, h0.shape[-1]],) + (([None, input_gates.shape[-1]], [None, c0.shape[-1]]) if save else ())]

    def body(t, c, h, *arrays):
        z = input_gates[t] + tf.cast(tf.matmul(tf.cast(h, recurrent_kernel.dtype), recurrent_kernel), state_dtype)
        new_c, new_h = _step(z, c, projection_kernel, cell_clip, projection_clip)
        if keep is not None:
            new_c, new_h = tf.where(keep[t], new_c, c), tf.where(keep[t], new_h, h)
        return (new_c, new_h, arrays[0].write(t, new_h)) + ((arrays[1].write(t, z), arrays[2].write(t, new_c)) if save else ())

    c, h, *arrays = _loop(length, body, [c0, h0] + arrays)
    # An empty TensorArray stacks to [0, 0, 0]: reshape to the full shape, which T = 0 needs.
    stacked = [tf.reshape(array.stack(), tf.concat([[length], tf.shape(like)[-2:]], axis=0))
               for array, like in zip(arrays, (h0, input_gates, c0))]
    return (stacked[0], c, h) + tuple(stacked[1:])


def _outputs(h_states, keep):
    return h_states if keep is None else tf.where(keep, h_states, tf.zeros([], h_states.dtype))


def autodiff(input_gates, c0, h0, recurrent_kernel, projection_kernel, keep=None, cell_clip=None, projection_clip=None):
    """The recurrence with TensorFlow's own gradient of the loop (see the module docstring).

    Args:
      input_gates: float32/64 [T, B, G] (x @ W_x + b, the forget bias added to the f columns).
      c0: [B, U], h0: [B, P] in input_gates' dtype.
      recurrent_kernel: [P, G], projection_kernel: [U, P] or None, in the compute dtype (the matmuls' dtype).
      keep: bool [T, B, 1] or None; cell_clip, projection_clip: floats or None.

    Returns:
      (outputs [T, B, P] zero at masked steps, c_T [B, U], h_T [B, P]), in input_gates' dtype.
    """
    h_states, c, h = _forward_loop(input_gates, c0, h0, recurrent_kernel, projection_kernel, keep, cell_clip,
                                   projection_clip)
    return _outputs(h_states, keep), c, h


def recurrence(input_gates, c0, h0, recurrent_kernel, projection_kernel, keep=None, cell_clip=None,
               projection_clip=None):
    """The recurrence with the hand-written backward loop; arguments and results as `autodiff`."""
    kernels = (recurrent_kernel,) if projection_kernel is None else (recurrent_kernel, projection_kernel)

    @tf.custom_gradient
    def run(input_gates, c0, h0, *kernels):
        projection = kernels[1] if len(kernels) > 1 else None
        h_states, c, h, z_all, c_states = _forward_loop(input_gates, c0, h0, kernels[0], projection, keep, cell_clip,
                                                        projection_clip, save=True)

        def grad(d_outputs, d_c, d_h):
            return _backward(input_gates.dtype, c0, h0, kernels[0], projection, keep, cell_clip, projection_clip,
                             z_all, c_states, h_states, d_outputs, d_c, d_h)

        return (_outputs(h_states, keep), c, h), grad

    return run(input_gates, c0, h0, *kernels)


def _backward_factors(z_all, c_prev, cell_clip):
    """The per-step factors of the backward loop, for all T steps: z [T, B, G], c_prev [T, B, U], cell_clip (a scalar,
    inf for none) -> (factors [T, B, 7U], m = o * tanh(c') [T, B, U]).

    Per step, d c_raw = (d c' + dm * o (1 - tanh_c^2)) * cell_pass; dz_o = dm * tanh_c o (1 - o);
    dz_{i, j, f} = d c_raw * (g i (1 - i), i (1 - g^2), c_prev f (1 - f)); d c_prev = d c_raw * f; the factors are
    [o (1 - tanh_c^2), tanh_c o (1 - o), cell_pass, f, g i (1 - i), i (1 - g^2), c_prev f (1 - f)].
    """
    z_i, z_j, z_f, z_o = tf.split(z_all, 4, axis=2)
    i, g, f, o = tf.sigmoid(z_i), tf.tanh(z_j), tf.sigmoid(z_f), tf.sigmoid(z_o)
    c_raw = f * c_prev + i * g
    tanh_c = tf.tanh(tf.clip_by_value(c_raw, -cell_clip, cell_clip))
    cell_pass = tf.cast((c_raw >= -cell_clip) & (c_raw <= cell_clip), z_all.dtype)  # as TF's _ClipByValueGrad
    factors = tf.concat([o * (1.0 - tanh_c ** 2), tanh_c * o * (1.0 - o), cell_pass, f,
                         g * i * (1.0 - i), i * (1.0 - g ** 2), c_prev * f * (1.0 - f)], axis=2)
    return factors, o * tanh_c


def _backward(dtype, c0, h0, recurrent_kernel, projection_kernel, keep, cell_clip, projection_clip, z_all, c_states,
              h_states, d_outputs, d_c, d_h):
    """Gradients of `recurrence` (d input_gates, d c0, d h0, d W_h[, d W_P]) from the saved z, c and h."""
    compute = recurrent_kernel.dtype
    zeros_like = lambda x, like: tf.zeros_like(like) if x is None else tf.cast(x, dtype)  # noqa: E731
    d_outputs, d_c, d_h = zeros_like(d_outputs, h_states), zeros_like(d_c, c0), zeros_like(d_h, h0)
    # Every step's activations at once, recomputed from z and the previous states. (As an XLA island this pass
    # ran 1.7x faster alone, but the whole training step only 2 % faster: not worth an island.)
    c_prev = tf.concat([c0[None], c_states[:-1]], axis=0)  # [T, B, U]
    h_prev = tf.concat([h0[None], h_states[:-1]], axis=0)  # [T, B, P]
    per_step, m = _backward_factors(z_all, c_prev, tf.constant(cell_clip or float("inf"), dtype))
    projection_pass = None
    if projection_kernel is not None:
        shape = tf.shape(m)
        p_raw = tf.reshape(tf.cast(tf.matmul(tf.reshape(tf.cast(m, compute), [-1, shape[2]]), projection_kernel), dtype),
                           tf.shape(h_states))  # [T, B, P]
        projection_pass = _passes_clip(p_raw, projection_clip, dtype)
    length, units = tf.shape(z_all)[0], c0.shape[-1]
    dz_array = tf.TensorArray(dtype, size=length, element_shape=[None, z_all.shape[-1]])
    dp_array = tf.TensorArray(dtype, size=length, element_shape=[None, h_states.shape[-1]])

    def body(t, d_c, d_h, dz_array, dp_array):
        d_new_h = d_h + d_outputs[t]
        if keep is not None:
            d_new_h = tf.where(keep[t], d_new_h, tf.zeros([], dtype))
        if projection_kernel is None:
            dp, dm = d_new_h, d_new_h
        else:
            dp = d_new_h if projection_pass is None else d_new_h * projection_pass[t]
            dm = tf.cast(tf.matmul(tf.cast(dp, compute), projection_kernel, transpose_b=True), dtype)
        a_c, a_o, passes, forget, a_ifg = tf.split(per_step[t], [units] * 4 + [3 * units], axis=1)
        d_c_new = d_c if keep is None else tf.where(keep[t], d_c, tf.zeros([], dtype))
        d_c_raw = (d_c_new + dm * a_c) * passes
        dz = tf.concat([tf.tile(d_c_raw, [1, 3]) * a_ifg, dm * a_o], axis=1)  # [B, G]: i, j, f, o
        d_h_prev = tf.cast(tf.matmul(tf.cast(dz, compute), recurrent_kernel, transpose_b=True), dtype)
        d_c_prev = d_c_raw * forget
        if keep is not None:
            d_h_prev = d_h_prev + tf.where(keep[t], tf.zeros([], dtype), d_h)
            d_c_prev = tf.where(keep[t], d_c_prev, d_c)
        return d_c_prev, d_h_prev, dz_array.write(t, dz), dp_array.write(t, dp)

    d_c0, d_h0, dz_array, dp_array = _loop(length, body, [d_c, d_h, dz_array, dp_array], reverse=True)
    dz_all = tf.reshape(dz_array.stack(), tf.shape(z_all))  # [T, B, G]: also the gradient of input_gates
    flat = lambda x: tf.cast(tf.reshape(x, [-1, x.shape[-1]]), compute)  # noqa: E731  [T*B, .]
    d_recurrent = tf.matmul(flat(h_prev), flat(dz_all), transpose_a=True)  # [P, G]
    grads = [dz_all, d_c0, d_h0, d_recurrent]
    if projection_kernel is not None:
        grads.append(tf.matmul(flat(m), flat(tf.reshape(dp_array.stack(), tf.shape(h_states))), transpose_a=True))  # [U, P]
    return grads
