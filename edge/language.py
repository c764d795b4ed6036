"""The instruction as the policy takes it: token ids (l,) and an attention mask (l,), from a
prompt tokenized on the robot with the tokenizer file the bundle carries (the `tokenizers`
library, extra ``language``), or from ids given as they are. No torch.

A policy whose state enters its prompt (pi0.5: edge.adapter.PromptSpec) gets the prompt built here
from the task and each observation's state (:func:`build_prompt`, :class:`PromptBuilder`) before the
tokenizer sees it; in ``legato run`` every observation's frame gets its own (:class:`PromptedSource`).
Both are checked against the adapter's language section (edge.adapter.LanguageSpec) before anything
moves: ids in 0..vocab_size-1, at most max_tokens of them, padded on the right with
pad_id; the mask is 1 on the real tokens. A prompt gets the adapter's ``append`` (LeRobot's
SmolVLA: "\\n") and the tokenizer's own special tokens (its post-processor decides, as the
Hugging Face processor does); a prompt that does not fit is refused, not truncated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.adapter import LanguageSpec, PromptSpec
from edge.errors import UsageError


def pad_ids(ids: Any, max_tokens: int, vocab_size: int | None, pad_id: int,
            source: str = "--tokens") -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Ids (an integer sequence) -> (tokens (max_tokens,) int64, mask (max_tokens,) bool), checked
    against the vocabulary (0..vocab_size-1; None: any id >= 0) and padded on the right."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise UsageError(f"{source}: expected integer token ids, got {arr.dtype}{list(arr.shape)}")
    if arr.size > max_tokens:
        raise UsageError(f"{source} has {arr.size} ids; the bundle's model takes at most {max_tokens}")
    hi = vocab_size - 1 if vocab_size else None
    bad = [int(i) for i in arr if int(i) < 0 or (hi is not None and int(i) > hi)]
    if bad:
        raise UsageError(f"{source} id {bad[0]} is outside the bundle's vocabulary "
                         f"({f'0..{hi}' if hi is not None else '>= 0'})")  # fmt: skip
    tokens = np.full(max_tokens, pad_id, np.int64)
    tokens[: arr.size] = arr
    mask = np.zeros(max_tokens, np.bool_)
    mask[: arr.size] = True
    return tokens, mask


def pad_tokens(ids: Any, lang: LanguageSpec, source: str = "--tokens") -> tuple[np.ndarray, np.ndarray]:
    """pad_ids with the adapter's language section."""
    return pad_ids(ids, lang.max_tokens, lang.vocab_size, lang.pad_id, source)


def parse_token_list(text: str, max_tokens: int, vocab_size: int | None, pad_id: int,
                     source: str = "--tokens") -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """'2,5,13' -> pad_ids; a value that is not an integer is one line."""
    ids = []
    for x in (p.strip() for p in text.split(",")):
        try:
            ids.append(int(x))
        except ValueError:
            raise UsageError(f"{source} {text!r}: {x!r} is not an integer token id "
                             "(expected comma-separated integers, e.g. 2,5,13)") from None  # fmt: skip
    return pad_ids(ids, max_tokens, vocab_size, pad_id, source)


def instruction(man: Any, tokens: str | None = None, prompt: str | None = None) -> tuple[Any, Any]:
    """The instruction of a robot run from ``--tokens`` or ``--prompt`` (one of them) for the
    bundle ``man`` (edge.bundle.Manifest): (tokens, mask), all pad without either; (None, None)
    for a policy that takes no language. A policy whose state enters its prompt (pi0.5) takes the
    task as ``--prompt`` only; its ids here are all pad until each frame's own prompt replaces them
    (:func:`state_prompter`)."""
    lang = man.adapter.observation.language
    if tokens is not None and prompt is not None:
        raise UsageError("give the instruction as --prompt or as --tokens, not both")
    if lang is None:
        if tokens is not None or prompt is not None:
            raise UsageError("this bundle's policy takes no instruction (no language input)")
        return None, None
    if lang.prompt is not None:
        if prompt is None:
            how = ", not as --tokens" if tokens is not None else ""
            raise UsageError("this bundle's policy writes each observation's state into its prompt "
                             f"(pi0.5): give the task as --prompt \"...\"{how}")  # fmt: skip
        return pad_ids([], lang.max_tokens, lang.vocab_size, lang.pad_id)
    if prompt is not None:
        return encode_prompt(load_tokenizer(man.path, lang), prompt, lang)
    if tokens is not None:
        return parse_token_list(tokens, lang.max_tokens, lang.vocab_size, lang.pad_id)
    return pad_ids([], lang.max_tokens, lang.vocab_size, lang.pad_id)


def state_prompter(man: Any, tasks: list[str]) -> PromptBuilder | None:
    """The prompt builder of a run of ``man`` (edge.bundle.Manifest) whose policy writes each
    observation's state into its prompt (pi0.5), checked before anything moves: every task in
    ``tasks`` fits the model's tokens at the state's extremes and middle (a prompt is refused, not
    truncated). None for any other policy, and for a policy server's model (no local adapter)."""
    ad = getattr(man, "adapter", None)
    lang = ad.observation.language if ad is not None else None
    if lang is None or lang.prompt is None:
        return None
    build = PromptBuilder(man.path, lang)
    for task in dict.fromkeys(tasks):  # each distinct task once
        build.check(task)
    return build


class PromptedSource:
    """An observation source whose frames carry the prompt built from their own state (pi0.5):
    ``source``'s frame with its tokens replaced by ``build(task(), frame.state)``, every read."""

    def __init__(self, source: Any, build: PromptBuilder, task: Callable[[], str]) -> None:
        self.source, self.build, self.task = source, build, task

    def read(self) -> Any:  # the rig closes the source it opened: nothing to close here
        frame = self.source.read()
        return dataclasses.replace(frame, tokens=self.build(self.task(), frame.state)[0])


def load_tokenizer(bundle: str | Path, lang: LanguageSpec) -> Any:
    """The bundle's tokenizer (tokenizers.Tokenizer); one line where there is none or the library
    is missing."""
    if lang.tokenizer is None:
        raise UsageError("this bundle carries no tokenizer: give the instruction as --tokens ids")
    path = Path(bundle) / lang.tokenizer
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UsageError(
            "a prompt needs the tokenizers library: pip install 'legato-edge[language]'"
        ) from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception type for a bad file
        raise UsageError(f"{path}: not a tokenizer file ({' '.join(str(e).split())[:120]})") from None


def encode_prompt(tokenizer: Any, prompt: str, lang: LanguageSpec) -> tuple[np.ndarray, np.ndarray]:
    """A prompt -> (tokens (l,) int64, mask (l,) bool) with the bundle's tokenizer."""
    if not prompt.strip():
        raise UsageError("--prompt is empty")
    enc = tokenizer.encode(prompt + lang.append)
    return pad_tokens(enc.ids, lang, source=f"--prompt {prompt!r}:")


def state_bins(prompt: PromptSpec, state: np.ndarray) -> np.ndarray:
    """Raw state (s,) -> its bins (s,) int64 in 0..bins-1: LeRobot's quantile normalisation in
    float32, 2 (s - low) / range - 1, then np.digitize on ``bins`` equal bins of [-1, 1] (openpi's
    PaligemmaTokenizer, LeRobot's Pi05PrepareStateTokenizerProcessorStep)."""
    low, high = np.asarray(prompt.state_low, np.float32), np.asarray(prompt.state_high, np.float32)
    span = high - low
    span = np.where(span == 0, np.float32(prompt.eps), span).astype(np.float32)
    x = 2 * (np.asarray(state, np.float32) - low) / span - 1
    edges = np.linspace(-1, 1, prompt.bins + 1)[:-1]
    return (np.digitize(x, bins=edges) - 1).astype(np.int64)


def build_prompt(prompt: PromptSpec, task: str, state: np.ndarray) -> str:
    """The prompt for one observation: the task (stripped, "_" and newlines as spaces) and the
    state's bins, in the adapter's template."""
    cleaned = task.strip().replace("_", " ").replace("\n", " ")
    return prompt.template.format(task=cleaned, state=" ".join(map(str, state_bins(prompt, state))))


class PromptBuilder:
    """The instruction from the task: (task, raw state) -> (tokens, mask) with the bundle's
    tokenizer. A policy whose state enters its prompt (pi0.5) gets a new prompt every observation
    (the state changes, so does the prompt); any other policy's ids depend on the task alone
    (encoded once per task, the state ignored). :meth:`check` refuses a task that cannot fit
    whatever the state, in one line, before anything moves."""

    CACHE = 256  # distinct tasks kept encoded (a server sees what its clients send)

    def __init__(self, bundle: str | Path, lang: LanguageSpec) -> None:
        self.lang, self.prompt = lang, lang.prompt
        self.tokenizer = load_tokenizer(bundle, lang)
        self._ids: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, task: str, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.prompt is not None:
            return encode_prompt(self.tokenizer, build_prompt(self.prompt, task, state), self.lang)
        hit = self._ids.get(task)
        if hit is None:
            hit = encode_prompt(self.tokenizer, task, self.lang)
            if len(self._ids) >= self.CACHE:
                self._ids.pop(next(iter(self._ids)))
            self._ids[task] = hit
        return hit

    def check(self, task: str) -> None:
        """Raise UsageError (one line) unless ``task`` fits the model's tokens at every state: at
        the state's extremes and middle (bins 0, the middle, the last: the digits' counts)."""
        if self.prompt is None:
            self(task, np.zeros(0, np.float32))
            return
        lo, hi = (np.asarray(x, np.float32) for x in (self.prompt.state_low, self.prompt.state_high))
        for state in (lo, (lo + hi) / 2, hi):
            self(task, state)
