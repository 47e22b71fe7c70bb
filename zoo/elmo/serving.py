"""ELMo's raw-string serving endpoints for `zoo.export`, with TF Hub elmo/3's signature and output names, and a
fine-tuned task model's.

Shape legend: B batch, K tokens per row of the `tokens` input, W words (the longest sentence of the batch after
the preprocessor's cut of T - 2 words), P projection width, C classes or tags.
"""

import tensorflow as tf

from zoo.elmo.embedder import default_mix, feature_outputs, token_words, word_positions
from zoo.task import IGNORED_TAG

_TEXT = tf.TensorSpec([None], tf.string, name="text")
_TOKENS = tf.TensorSpec([None, None], tf.string, name="tokens")
_SEQUENCE_LEN = tf.TensorSpec([None], tf.int32, name="sequence_len")


def serving_endpoints(backbone, preprocessor, network_function, task=None, jit_compile=False):
    """Returns ({name: tf.function}, default endpoint name, {name: trackable}).

    Endpoints (TF Hub elmo/3's names; sentences are split on whitespace, each keeps its first T - 2 words):
      default(text [B]) and tokens(tokens [B, K], sequence_len int32 [B]: each row's first sequence_len tokens,
        clipped to [0, K]) -> word_emb [B, W, P] (the char-CNN token representation), lstm_outputs1..L
        [B, W, 2P], elmo [B, W, 2P] (the scalar mix; its weights are exported variables: an even mix, gamma 1,
        for a pretrained model, the task's learned mix for a fine-tuned one that mixes every layer), default
        [B, 2P] (the mean of elmo over the words), sequence_len int32 [B] (words kept), mask int32 [B, W].
      With `task` (a fine-tuned `ElmoClassifier`): classify(text [B]) -> probabilities [B, C], logits [B, C];
      (an `ElmoTagger`): tag(text [B]) and tag_tokens(tokens [B, K], sequence_len [B]) -> probabilities
        [B, W, C] (0 past the words), logits [B, W, C], tags int32 [B, W] (argmax; -1 past the words), mask,
        sequence_len.
      The task's endpoint is the default one; else `default`.
    jit_compile: the network part (features -> outputs) runs as XLA computations.
    """
    task_mix = task.feature_mix() if task is not None else None
    mix = task_mix if task_mix is not None else default_mix(backbone)
    tokenizer = preprocessor.tokenizer

    def word_features(tokens, sequence_len):
        return preprocessor.features(preprocessor.frame(token_words(tokenizer, tokens, sequence_len)))

    encode = network_function(lambda features: feature_outputs(backbone, mix, features), jit_compile=jit_compile)

    @tf.function(input_signature=[_TEXT])
    def default(text):
        return encode(preprocessor(text))

    @tf.function(input_signature=[_TOKENS, _SEQUENCE_LEN])
    def tokens(tokens, sequence_len):
        return encode(word_features(tokens, sequence_len))

    endpoints = {"default": default, "tokens": tokens}
    trackables = {"backbone": backbone, "tokenizer": tokenizer}
    if task_mix is None:
        trackables["mix"] = mix
    if task is None:
        return endpoints, "default", trackables
    trackables.update(task.parts())
    if not task.per_word:
        def class_outputs(features):
            logits = tf.cast(task.logits(features, training=False), tf.float32)
            return {"probabilities": tf.nn.softmax(logits, axis=-1), "logits": logits}

        classify_features = network_function(class_outputs, jit_compile=jit_compile)

        @tf.function(input_signature=[_TEXT])
        def classify(text):
            return classify_features(preprocessor(text))

        endpoints["classify"] = classify
        return endpoints, "classify", trackables

    def tag_outputs(features):
        logits = tf.cast(task.logits(features, training=False), tf.float32)  # [B, W, C]
        _, word_mask = word_positions(features["padding_mask"], features["padding_mask"])
        tags = tf.where(word_mask, tf.argmax(logits, axis=-1, output_type=tf.int32), IGNORED_TAG)
        probabilities = tf.where(word_mask[:, :, None], tf.nn.softmax(logits, axis=-1), 0.0)
        return {"probabilities": probabilities, "logits": logits, "tags": tags,
                "mask": tf.cast(word_mask, tf.int32), "sequence_len": tf.reduce_sum(tf.cast(word_mask, tf.int32), axis=1)}

    tag_features = network_function(tag_outputs, jit_compile=jit_compile)

    @tf.function(input_signature=[_TEXT])
    def tag(text):
        return tag_features(preprocessor(text))

    @tf.function(input_signature=[_TOKENS, _SEQUENCE_LEN])
    def tag_tokens(tokens, sequence_len):
        return tag_features(word_features(tokens, sequence_len))

    endpoints.update(tag=tag, tag_tokens=tag_tokens)
    return endpoints, "tag", trackables
