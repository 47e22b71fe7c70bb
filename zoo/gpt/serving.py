"""GPT's raw-string serving endpoints for `zoo.export`: features of every layer, scoring, generation, and a fine-tuned
task model's outputs.

Shape legend: B batch, T tokens (the longest in the batch, at most the preprocessor's), H hidden, N new tokens,
K classes or candidates.
"""

import tensorflow as tf

from zoo.gpt import generation
from zoo.gpt.causal_lm import GPTCausalLM

_TEXT = tf.TensorSpec([None], tf.string, name="text")
_TEXT_A = tf.TensorSpec([None], tf.string, name="text_a")
_TEXT_B = tf.TensorSpec([None], tf.string, name="text_b")
_CONTEXT = tf.TensorSpec([None], tf.string, name="context")
_CANDIDATES = tf.TensorSpec([None, None], tf.string, name="candidates")
# The sampling settings of `generate_with_settings`, each a scalar tensor a client sends with the texts.
_SETTINGS = (
    tf.TensorSpec([], tf.int32, name="max_new_tokens"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.float32, name="top_p"),
    tf.TensorSpec([], tf.int64, name="seed"),
)
DEFAULT_NEW_TOKENS = 32


def serving_endpoints(family, backbone, preprocessor, network_function, task=None, jit_compile=False):
    """Returns ({name: tf.function}, default endpoint name, {name: trackable}).

    Endpoints (every text is preceded by the end-of-text separator, as documents are in pretraining):
      encode(text [B]) -> sequence_output [B, T, H], sequence_mask int32 [B, T], embedding_output [B, T, H],
        encoder_layer_0..L-1 [B, T, H] (every layer, feature-based use).
      score(text [B]) -> token_log_probs float32 [B, T - 1] (log p of each token given the ones before it; 0 at
        padding), token_mask int32 [B, T - 1], log_prob [B] (their sum), num_tokens int32 [B], perplexity [B]
        (exp of the mean negative log-probability per BPE token; 1 for an empty text).
      generate(text [B]) -> greedy continuation of 32 tokens at most (stopping at end-of-text): text [B],
        token_ids int32 [B, N] (0-padded), lengths int32 [B].
      generate_with_settings(text [B], max_new_tokens, temperature, top_k, top_p, seed: scalars) -> the same;
        temperature 0 is greedy, top_k 0 and top_p 1 turn those filters off, the same seed gives the same text.
        A prompt longer than the context minus max_new_tokens keeps its last tokens; max_new_tokens is capped so
        that at least one prompt token fits.
      With `task` (a fine-tuned `GPTClassifier`): its endpoint (`task_endpoint`: classify or choose), the default.
    The decoding loop is a tf.while_loop with each block's keys and values cached (one position per step).
    jit_compile applies to encode and score (whose shapes repeat); generation's loop runs as graph ops.
    """
    model = GPTCausalLM(backbone)
    tokenizer = preprocessor.tokenizer
    banned = family.banned_ids(tokenizer)

    def features_outputs(features):
        out = backbone(features, training=False)
        result = {"sequence_output": tf.cast(out["sequence_output"], tf.float32),
                  "sequence_mask": tf.cast(features["padding_mask"], tf.int32),
                  "embedding_output": tf.cast(out["embedding_output"], tf.float32)}
        for i, layer in enumerate(out["encoder_outputs"]):
            result[f"encoder_layer_{i}"] = tf.cast(layer, tf.float32)
        return result

    def score_outputs(features):
        log_probs = model.token_log_probs(features["token_ids"], features["padding_mask"])  # [B, T-1]
        mask = features["padding_mask"][:, 1:] * features["padding_mask"][:, :-1]
        total = tf.reduce_sum(log_probs, axis=1)
        count = tf.reduce_sum(mask, axis=1)
        perplexity = tf.exp(-total / tf.maximum(tf.cast(count, tf.float32), 1.0))
        return {"token_log_probs": log_probs, "token_mask": tf.cast(mask, tf.int32), "log_prob": total,
                "num_tokens": tf.cast(count, tf.int32), "perplexity": perplexity}

    encode_features = network_function(features_outputs, jit_compile=jit_compile)
    score_features = network_function(score_outputs, jit_compile=jit_compile)

    def continue_texts(text, max_new_tokens, temperature, top_k, top_p, seed):
        return generation.continue_texts(model, tokenizer, text, max_new_tokens, temperature=temperature, top_k=top_k,
                                         top_p=top_p, seed=seed, banned_ids=banned)

    @tf.function(input_signature=[_TEXT])
    def encode(text):
        return encode_features(preprocessor(text))

    @tf.function(input_signature=[_TEXT])
    def score(text):
        return score_features(preprocessor(text))

    @tf.function(input_signature=[_TEXT])
    def generate(text):
        return continue_texts(text, DEFAULT_NEW_TOKENS, 0.0, 0, 1.0, 0)

    @tf.function(input_signature=[_TEXT, *_SETTINGS])
    def generate_with_settings(text, max_new_tokens, temperature, top_k, top_p, seed):
        return continue_texts(text, max_new_tokens, temperature, top_k, top_p, seed)

    endpoints = {"encode": encode, "score": score, "generate": generate, "generate_with_settings": generate_with_settings}
    trackables = {"backbone": backbone, "tokenizer": tokenizer}
    if task is None:
        return endpoints, "encode", trackables
    name, endpoints[name] = task_endpoint(task, preprocessor, network_function, jit_compile=jit_compile)
    trackables.update(task.parts())
    return endpoints, name, trackables


def task_endpoint(task, preprocessor, network_function, jit_compile=False):
    """(name, tf.function on raw strings) of a fine-tuned `GPTClassifier`, in its input transform's layout.

    classification: classify(text [B]); entailment and similarity: classify(text_a [B], text_b [B]) (premise and
    hypothesis for entailment; similarity runs both orders); multiple choice: choose(context [B],
    candidates [B, K]). Each returns probabilities float32 [B, K] (softmax over the classes, or across the K
    candidates) and logits [B, K]. `preprocessor` brings the export's trim and length bucketing; the task's
    transform picks its layout.
    """
    pre = preprocessor.with_form(task.transform)

    def outputs(features):
        logits = tf.cast(task.logits(features, training=False), tf.float32)  # float32 out of a bf16 export too
        return {"probabilities": tf.nn.softmax(logits, axis=-1), "logits": logits}

    run = network_function(outputs, jit_compile=jit_compile)
    if task.transform == "classification":
        @tf.function(input_signature=[_TEXT])
        def classify(text):
            return run(pre(text))

        return "classify", classify
    if task.transform == "multiple_choice":
        @tf.function(input_signature=[_CONTEXT, _CANDIDATES])
        def choose(context, candidates):
            return run(pre(context, candidates))

        return "choose", choose

    @tf.function(input_signature=[_TEXT_A, _TEXT_B])
    def classify_pair(text_a, text_b):
        return run(pre(text_a, text_b))

    return "classify", classify_pair
