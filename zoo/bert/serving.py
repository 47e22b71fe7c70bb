"""BERT's raw-string serving endpoints (feature-based and fine-tuned), for `zoo.export`.

Shape legend: B batch, T packed length (longest in the batch, at most the preprocessor's), H hidden, K classes.
"""

import tensorflow as tf

_TEXT = tf.TensorSpec([None], tf.string, name="text")
_TEXT_A = tf.TensorSpec([None], tf.string, name="text_a")
_TEXT_B = tf.TensorSpec([None], tf.string, name="text_b")


def serving_endpoints(backbone, preprocessor, network_function, task=None, jit_compile=False):
    """Returns ({name: tf.function}, default endpoint name, {name: trackable}).

    network_function: how the export runs the network part, `network_function(fn, jit_compile=) -> callable`
      (`zoo.export.network_function`, handed in by the caller with its other settings, e.g. frozen weights).
    jit_compile: the network part (features -> outputs; not the TF Text tokenizer) becomes one XLA computation,
      compiled per input shape on first use (1-3 s at MiniLM size on a CPU); it fuses the per-op work that
      dominates small batches. Pair it with a preprocessor that pads to a multiple of a few tokens. TF Serving
      runs it only when started with --xla_cpu_compilation_enabled=true (CPU).

    Endpoints:
      encode(text [B]) / encode_pairs(text_a [B], text_b [B]) -> pooled_output [B, H], sequence_output [B, T, H],
        sequence_mask int32 [B, T], embedding_output [B, T, H], encoder_layer_0..L-1 [B, T, H] (every layer).
      With `task` (a fine-tuned `BertClassifier`): classify(text) / classify_pairs(text_a, text_b) -> probabilities [B, K], logits [B, K].
    """

    classes = ("probabilities", "logits")

    def outputs(features, encoder=True, head=True):
        out = backbone(features, training=False)
        result = {}
        if encoder:
            result.update(pooled_output=tf.cast(out["pooled_output"], tf.float32),
                          sequence_output=tf.cast(out["sequence_output"], tf.float32),
                          sequence_mask=tf.cast(features["padding_mask"], tf.int32),
                          embedding_output=tf.cast(out["embedding_output"], tf.float32))
            for i, layer in enumerate(out["encoder_outputs"]):
                result[f"encoder_layer_{i}"] = tf.cast(layer, tf.float32)
        if head and task is not None:
            logits = tf.cast(task.logits(features, out, training=False), tf.float32)  # float32 out of a bf16 export too
            result.update(probabilities=tf.nn.softmax(logits, axis=-1), logits=logits)
        return result

    if jit_compile:  # one XLA program per endpoint kind: a program computes every output it has
        encode_features = network_function(lambda f: outputs(f, head=False), jit_compile=True)
        classify_features = network_function(lambda f: outputs(f, encoder=False), jit_compile=True)
    else:  # one function for every endpoint (a frozen export holds its weights once); grappler prunes what an
        # endpoint does not return once the call is inlined
        shared = network_function(outputs, jit_compile=False)

        def encode_features(features):
            return {k: v for k, v in shared(features).items() if k not in classes}

        def classify_features(features):
            return {k: v for k, v in shared(features).items() if k in classes}

    @tf.function(input_signature=[_TEXT])
    def encode(text):
        return encode_features(preprocessor(text))

    @tf.function(input_signature=[_TEXT_A, _TEXT_B])
    def encode_pairs(text_a, text_b):
        return encode_features(preprocessor(text_a, text_b))

    endpoints = {"encode": encode, "encode_pairs": encode_pairs}
    trackables = {"backbone": backbone, "tokenizer": preprocessor.tokenizer}
    default = "encode"
    if task is not None:

        @tf.function(input_signature=[_TEXT])
        def classify(text):
            return classify_features(preprocessor(text))

        @tf.function(input_signature=[_TEXT_A, _TEXT_B])
        def classify_pairs(text_a, text_b):
            return classify_features(preprocessor(text_a, text_b))

        endpoints.update(classify=classify, classify_pairs=classify_pairs)
        trackables.update(task.parts())
        default = "classify"
    return endpoints, default, trackables
