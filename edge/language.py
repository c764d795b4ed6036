"""The instruction as the policy takes it: token ids (l,) and an attention mask (l,), from a
prompt tokenized on the robot with the tokenizer file the bundle carries (the `tokenizers`
library, extra ``language``), or from ids given as they are. No torch.

Both are checked against the adapter's language section (edge.adapter.LanguageSpec) before
anything moves: ids in 0..vocab_size-1, at most max_tokens of them, padded on the right with
pad_id; the mask is 1 on the real tokens. A prompt gets the adapter's ``append`` (LeRobot's
SmolVLA: "\\n") and the tokenizer's own special tokens (its post-processor decides, as the
Hugging Face processor does); a prompt that does not fit is refused, not truncated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.adapter import LanguageSpec
from edge.errors import UsageError


def pad_tokens(ids: Any, lang: LanguageSpec, source: str = "--tokens") -> tuple[np.ndarray, np.ndarray]:
    """Ids (any integer sequence) -> (tokens (l,) int64, mask (l,) bool), checked and padded."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise UsageError(f"{source}: expected a list of integer token ids, got {arr.dtype}{list(arr.shape)}")
    if arr.size == 0:
        raise UsageError(f"{source}: no token ids")
    if arr.size > lang.max_tokens:
        raise UsageError(f"{source}: {arr.size} tokens, the policy takes at most {lang.max_tokens}")
    bad = [int(x) for x in arr if not 0 <= int(x) < lang.vocab_size]
    if bad:
        raise UsageError(f"{source}: token id {bad[0]} is outside the vocabulary 0..{lang.vocab_size - 1}")
    tokens = np.full(lang.max_tokens, lang.pad_id, np.int64)
    tokens[: arr.size] = arr
    mask = np.zeros(lang.max_tokens, np.bool_)
    mask[: arr.size] = True
    return tokens, mask


def parse_token_list(text: str, lang: LanguageSpec, source: str = "--tokens") -> tuple[np.ndarray, np.ndarray]:
    """'3,5,7' -> pad_tokens; anything but comma-separated integers is one line."""
    parts = [p.strip() for p in text.split(",")]
    try:
        ids = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"{source} {text!r}: expected comma-separated integer token ids, e.g. 2,5,9") from None
    return pad_tokens(ids, lang, source)


def load_tokenizer(bundle: str | Path, lang: LanguageSpec) -> Any:
    """The bundle's tokenizer (tokenizers.Tokenizer); one line where there is none or the library
    is missing."""
    if lang.tokenizer is None:
        raise UsageError("this bundle carries no tokenizer: give the instruction as --tokens ids")
    path = Path(bundle) / lang.tokenizer
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UsageError("a prompt needs the tokenizers library: pip install 'legato-edge[language]'") from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception type for a bad file
        raise UsageError(f"{path}: not a tokenizer file ({' '.join(str(e).split())[:120]})") from None


def encode_prompt(tokenizer: Any, prompt: str, lang: LanguageSpec) -> tuple[np.ndarray, np.ndarray]:
    """A prompt -> (tokens (l,) int64, mask (l,) bool) with the bundle's tokenizer."""
    if not prompt.strip():
        raise UsageError("--prompt is empty")
    enc = tokenizer.encode(prompt + lang.append)
    return pad_tokens(enc.ids, lang, source=f"--prompt {prompt!r}")
