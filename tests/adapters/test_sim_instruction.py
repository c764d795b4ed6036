"""`legato run --sim` hands each episode's instruction to the bundle as the bundle takes it: the
simulator's own ids to a bundle that speaks them (the reference model's), the instruction's words
through the bundle's tokenizer to a LeRobot policy (edge.simrig.sim_instruction), equal to what
LeRobot's tokenizer step gives on the workstation."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge.adapter import LanguageSpec
from edge.errors import UsageError
from edge.simrig import sim_instruction, speaks_sim_ids
from sim.language import TEMPLATES, detokenize, instruction, tokenize
from sim.scene import COLORS

ROOT = Path(__file__).resolve().parents[2]
ALL_IDS = np.stack([tokenize(instruction(c, t)) for c in COLORS for t in range(len(TEMPLATES))])


def _bundle(tmp_path: Path, tokenizer: Path | None, **lang) -> SimpleNamespace:
    if tokenizer is not None:
        shutil.copyfile(tokenizer, tmp_path / "tokenizer.json")
    base = {"tokens": "tokens", "mask": None, "max_tokens": 6, "vocab_size": 14, "pad_id": 0,
            "tokenizer": "tokenizer.json" if tokenizer else None, "append": ""}  # fmt: skip
    spec = LanguageSpec(**(base | lang))
    adapter = SimpleNamespace(observation=SimpleNamespace(language=spec))
    return SimpleNamespace(path=str(tmp_path), adapter=adapter)


def test_reference_bundle_gets_the_simulators_ids_without_tokenizers(tmp_path):
    man = _bundle(tmp_path, ROOT / "models" / "legato-x86-cpu" / "tokenizer.json")
    assert speaks_sim_ids(man.path, man.adapter.observation.language)
    convert = sim_instruction(man, ALL_IDS)
    assert all(convert(ids) is ids for ids in ALL_IDS)  # untouched: no tokenizers library needed


def test_smolvla_bundle_gets_the_prompt_through_its_tokenizer(tmp_path):
    pytest.importorskip("tokenizers", reason="the language extra (tokenizers) is not installed")
    pytest.importorskip("transformers", reason="the vla extra (transformers) is not installed")
    from legato.adapters.lerobot_files import load_tokenizer
    from legato.adapters.lerobot_files import tokenize as lerobot_tokenize

    vlm = ROOT / "configs" / "smolvlm2-reduced"
    man = _bundle(tmp_path, vlm / "tokenizer.json", mask="token_mask", max_tokens=16, vocab_size=420,
                  append="\n")  # fmt: skip
    assert not speaks_sim_ids(man.path, man.adapter.observation.language)
    convert = sim_instruction(man, ALL_IDS)
    # LeRobot's pre-processor on the workstation: task + "\n", its tokenizer, padded to max_length
    tok = load_tokenizer(str(vlm))
    cfg = {"max_length": 16, "padding": "max_length", "padding_side": "right", "truncation": True}
    want, mask = lerobot_tokenize(tok, [detokenize(ids) + "\n" for ids in ALL_IDS], cfg)
    got = np.stack([convert(ids) for ids in ALL_IDS])
    assert got.shape == (len(ALL_IDS), 16) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    assert mask.sum(1).min() >= 4 and len({r.tobytes() for r in got}) == len(ALL_IDS)  # distinct prompts


def test_prompt_that_does_not_fit_is_refused_before_the_run(tmp_path):
    pytest.importorskip("tokenizers", reason="the language extra (tokenizers) is not installed")
    vlm = ROOT / "configs" / "smolvlm2-reduced"
    man = _bundle(tmp_path, vlm / "tokenizer.json", mask="token_mask", max_tokens=3, vocab_size=420,
                  append="\n")  # fmt: skip
    with pytest.raises(UsageError, match="takes at most 3"):
        sim_instruction(man, ALL_IDS)
