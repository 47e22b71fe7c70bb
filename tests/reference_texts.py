"""Demo texts shared by the golden-file recorders (scripts/record_tokenizer_golden.py,
scripts/record_minilm_reference.py). Changing one changes what those scripts would record: regenerate both
golden files if you do."""

# An English paragraph about BERT, longer than 128 word pieces (for truncation).
LONG_TEXT = (
    "BERT, which stands for Bidirectional Encoder Representations from Transformers, is a language model "
    "introduced in October 2018 by researchers at Google. It learns to represent text as a sequence of "
    "vectors using self-supervised learning. It uses the encoder-only transformer architecture. BERT "
    "dramatically improved the state of the art for large language models. As of 2020, BERT is a ubiquitous "
    "baseline in natural language processing (NLP) experiments. BERT is trained by masked token prediction "
    "and next sentence prediction. As a result of this training process, BERT learns contextual, latent "
    "representations of tokens in their context, similar to ELMo and GPT-2. It found applications for many "
    "natural language processing tasks, such as coreference resolution and polysemy resolution."
)
