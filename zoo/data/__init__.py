"""tf.data, TFRecords and corpora; knows no model family.

Import the submodules (``from zoo.data import corpus, instances, records, pipeline, schema``). This package
file imports nothing on purpose, so a family that reads only ``zoo.data.schema`` does not load the corpus,
instance and pipeline code (tests/test_architecture.py allows families schema only).

Modules (imports point downwards: schema <- records <- pipeline; corpus and instances stand alone):
    schema     the one list of pretraining feature names, dtypes and shapes
    corpus     text files / folders / globs / tfds -> documents; the IMDB demo corpus; Rotten Tomatoes task
    instances  BERT sentence-pair + NSP + static masking instances (google-research semantics)
    records    atomic sharded TFRecord writer, tf.train.Example building and parsing
    pipeline   records -> per-replica batches; packed pairs -> dynamically masked batches; tokenize_documents
"""

__all__ = ["corpus", "instances", "pipeline", "records", "schema"]
