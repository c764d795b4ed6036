"""Instructions in words and a small fixed-vocabulary tokenizer.

The vocabulary is fixed so that token ids are a stable part of the model's interface: the
same ids on the workstation and on the robot. Unknown words map to <unk>; ids are padded with
<pad> (0) to max_len.
"""

from __future__ import annotations

import numpy as np

from sim.scene import COLORS

VOCAB: tuple[str, ...] = (
    "<pad>", "<unk>", "reach", "go", "to", "the", "move", "touch", "target", "one", "dot",
    *COLORS,
)  # fmt: skip
TEMPLATES: tuple[str, ...] = (
    "reach the {} target",
    "go to the {} one",
    "touch the {} dot",
    "move to the {} target",
)
MAX_TOKENS = 6
_INDEX = {w: i for i, w in enumerate(VOCAB)}


def instruction(color: str, template: int = 0) -> str:
    """The instruction for a colour, in one of the fixed templates."""
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; known: {', '.join(COLORS)}")
    return TEMPLATES[template % len(TEMPLATES)].format(color)


def tokenize(text: str, max_len: int = MAX_TOKENS) -> np.ndarray:
    """Lower-case whitespace tokenizer: text -> token ids (max_len,) int64, <pad>-padded."""
    words = text.lower().split()
    if len(words) > max_len:
        raise ValueError(f"instruction has {len(words)} words, at most {max_len} fit: {text!r}")
    ids = np.zeros(max_len, dtype=np.int64)
    ids[: len(words)] = [_INDEX.get(w, _INDEX["<unk>"]) for w in words]
    return ids


def detokenize(ids: np.ndarray) -> str:
    return " ".join(VOCAB[i] for i in ids if i != 0)
