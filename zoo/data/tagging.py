"""Entity spans of BIO tag sequences and entity-level F1, as CoNLL's conlleval counts them.

A chunk starts at ``B-X``, at an ``I-X`` that does not continue a chunk of type X (an ``I-`` after ``O``, after the
sentence start or after another type: conlleval's lenient reading), and ends before any tag that does not
continue it (``O``, ``B-``, an ``I-`` of another type). A predicted entity counts when its type, start and end all
match a gold one; precision, recall and F1 are over all entities of all sentences (micro-averaged).
"""

from __future__ import annotations

from typing import Sequence


def _split(tag: str) -> tuple[str, str]:
    """("B" | "I" | "O", type) of a tag; "O" and anything without a ``B-``/``I-`` prefix are outside."""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
        return tag[0], tag[2:]
    return "O", ""


def bio_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """[(type, start, end)] chunks of one sentence's BIO tags, end exclusive (see the module docstring)."""
    spans, start, kind = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, t = _split(tag)
        continues = prefix == "I" and start is not None and t == kind
        if start is not None and not continues:
            spans.append((kind, start, i))
            start, kind = None, None
        if prefix == "B" or (prefix == "I" and not continues):
            start, kind = i, t
    return spans


def entity_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision / recall / F1 (micro over sentences) and token accuracy.

    Args:
        gold, predicted: per sentence, its tags (names such as "B-person"); each predicted sentence as long as its
            gold one.

    Returns:
        {"precision", "recall", "f1", "token_accuracy", "gold_entities", "predicted_entities", "correct_entities",
         "tokens"}; precision (recall) is 0 with no predicted (gold) entities, F1 0 when both are 0.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted ones.")
    n_gold = n_pred = n_correct = n_tokens = n_right = 0
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"Sentence {i}: {len(g)} gold tags but {len(p)} predicted ones.")
        gs, ps = set(bio_spans(g)), set(bio_spans(p))
        n_gold, n_pred, n_correct = n_gold + len(gs), n_pred + len(ps), n_correct + len(gs & ps)
        n_tokens += len(g)
        n_right += sum(a == b for a, b in zip(g, p))
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "token_accuracy": n_right / n_tokens if n_tokens else 0.0, "gold_entities": n_gold,
            "predicted_entities": n_pred, "correct_entities": n_correct, "tokens": n_tokens}
