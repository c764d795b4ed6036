"""edge.language: the instruction as the policy takes it, from --tokens or a --prompt tokenized
with the bundle's tokenizer file, checked against the adapter's language section."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge.adapter import LanguageSpec, PromptSpec
from edge.errors import UsageError
from edge.language import (
    build_prompt,
    encode_prompt,
    instruction,
    load_tokenizer,
    pad_ids,
    parse_token_list,
    state_bins,
)

ROOT = Path(__file__).resolve().parents[2]
LANG = LanguageSpec(tokens="tokens", mask=None, max_tokens=6, vocab_size=14, pad_id=0,
                    tokenizer="tokenizer.json", append="")  # fmt: skip


def test_ids_are_padded_with_the_adapters_pad_id_and_masked():
    tokens, mask = pad_ids([2, 5, 13], 6, 14, pad_id=7)
    np.testing.assert_array_equal(tokens, [2, 5, 13, 7, 7, 7])
    np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(parse_token_list(" 2, 5 ,13", 6, 14, 0)[0], [2, 5, 13, 0, 0, 0])


@pytest.mark.parametrize(
    "text,match",
    [("a,b", "'a' is not an integer"), ("1,2,3,4,5,6,7", "at most 6"),
     ("99", "outside the bundle's vocabulary"),
     ("-1", "outside the bundle's vocabulary"), ("", "'' is not an integer")],
)  # fmt: skip
def test_bad_token_lists_are_one_line(text, match):
    with pytest.raises(UsageError, match=match) as e:
        parse_token_list(text, 6, 14, 0)
    assert "\n" not in str(e.value)


def _bundle_with_tokenizer(tmp_path):
    pytest.importorskip("tokenizers")
    pytest.importorskip("torch")
    from legato.adapters.reference import tokenizer_json

    (tmp_path / "tokenizer.json").write_bytes(tokenizer_json())
    return tmp_path


def test_a_prompt_tokenizes_to_the_ids_the_model_was_trained_on(tmp_path):
    """The reference bundle's tokenizer.json (a tokenizers WordLevel model) gives sim.language's ids."""
    from sim.language import TEMPLATES, tokenize
    from sim.scene import COLORS

    tok = load_tokenizer(_bundle_with_tokenizer(tmp_path), LANG)
    for t in TEMPLATES:
        for c in COLORS:
            ids, mask = encode_prompt(tok, t.format(c).upper(), LANG)
            np.testing.assert_array_equal(ids, tokenize(t.format(c)))
            assert mask.sum() == len(t.format(c).split())
    with pytest.raises(UsageError, match="has 7 ids; the bundle's model takes at most 6"):
        encode_prompt(tok, "reach the red target and the blue", LANG)
    with pytest.raises(UsageError, match="--prompt is empty"):
        encode_prompt(tok, "  ", LANG)


def test_instruction_of_a_run(tmp_path):
    b = _bundle_with_tokenizer(tmp_path)
    man = SimpleNamespace(path=b, adapter=SimpleNamespace(observation=SimpleNamespace(language=LANG)))
    np.testing.assert_array_equal(instruction(man, prompt="go to the red one")[0], [3, 4, 5, 11, 9, 0])
    np.testing.assert_array_equal(instruction(man, tokens="3,4")[0], [3, 4, 0, 0, 0, 0])
    np.testing.assert_array_equal(instruction(man)[0], [0] * 6)
    with pytest.raises(UsageError, match="not both"):
        instruction(man, tokens="3", prompt="go")
    none = SimpleNamespace(path=b, adapter=SimpleNamespace(observation=SimpleNamespace(language=None)))
    assert instruction(none) == (None, None)
    with pytest.raises(UsageError, match="takes no instruction"):
        instruction(none, prompt="go")
    plain = SimpleNamespace(path=b, adapter=SimpleNamespace(observation=SimpleNamespace(
        language=LanguageSpec("tokens", None, 6, 14, 0, None, ""))))  # fmt: skip
    with pytest.raises(UsageError, match="carries no tokenizer: give the instruction as --tokens"):
        instruction(plain, prompt="go")


def test_the_committed_bundle_carries_its_tokenizer():
    pytest.importorskip("tokenizers")
    m = json.loads((ROOT / "models/legato-x86-cpu/manifest.json").read_text())
    lang = m["adapter"]["observation"]["language"]
    assert lang["tokenizer"] == "tokenizer.json" and "tokenizer.json" in m["files"]
    tok = load_tokenizer(ROOT / "models/legato-x86-cpu", LANG)
    np.testing.assert_array_equal(encode_prompt(tok, "reach the red target", LANG)[0], [2, 5, 11, 8, 0, 0])


PROMPT = PromptSpec(template="Task: {task}, State: {state};\nAction: ", state_low=(-1.0, 0.0, 2.0),
                    state_high=(1.0, 4.0, 2.0), eps=1e-8, bins=256)  # fmt: skip


def test_the_state_is_binned_as_lerobots_pi05_step_bins_it():
    """2 (s - low) / (high - low) - 1 cut into 256 bins of [-1, 1]; above the range is the last
    bin, below it -1 (np.digitize, as LeRobot's Pi05PrepareStateTokenizerProcessorStep gives); a
    zero range counts as eps (its low value is bin 0, anything above it the last bin)."""
    np.testing.assert_array_equal(state_bins(PROMPT, np.array([0.0, 0.0, 2.0])), [128, 0, 0])
    np.testing.assert_array_equal(state_bins(PROMPT, np.array([1.0, 4.0, 2.0])), [255, 255, 0])
    np.testing.assert_array_equal(state_bins(PROMPT, np.array([5.0, -1.0, 3.0])), [255, -1, 255])
    np.testing.assert_array_equal(state_bins(PROMPT, np.array([-0.99, 1.0, 1.0])), [1, 64, -1])


def test_the_prompt_holds_the_cleaned_task_and_the_bins():
    text = build_prompt(PROMPT, "  pick_up the\ncube ", np.array([0.0, 4.0, 2.0]))
    assert text == "Task: pick up the cube, State: 128 255 0;\nAction: "


@pytest.mark.parametrize(
    "edit,match",
    [(lambda p: p.update(template="Task: {task}"), r"prompt.template must hold \{task\} and \{state\}"),
     (lambda p: p.update(state_low=[0.0, "x", 1.0]), "prompt.state_low must be a list of finite numbers"),
     (lambda p: p.update(state_high=[0.0, 1.0]), "prompt.state_high has 2 entries, state_dim is 3"),
     (lambda p: p.update(bins=1), "bins"),
     (lambda p: p.pop("eps"), "eps")],
)  # fmt: skip
def test_a_bad_prompt_section_is_one_line(edit, match):
    from rt_graphs import fake_adapter

    from edge.adapter import AdapterSpec
    from edge.errors import BundleError

    d = fake_adapter(s=3).to_dict()
    d["observation"]["state"] = None
    d["observation"]["language"] |= {"tokenizer": "tokenizer.json", "prompt": {
        "template": PROMPT.template, "state_low": [-1.0, 0.0, 2.0], "state_high": [1.0, 4.0, 2.0],
        "eps": 1e-8, "bins": 256}}  # fmt: skip
    assert AdapterSpec.from_dict(d).observation.language.prompt == PROMPT
    edit(d["observation"]["language"]["prompt"])
    with pytest.raises(BundleError, match=match) as e:
        AdapterSpec.from_dict(d)
    assert "\n" not in str(e.value)


def test_a_prompt_built_on_the_robot_needs_the_bundles_tokenizer():
    from rt_graphs import fake_adapter

    from edge.adapter import AdapterSpec
    from edge.errors import BundleError

    d = fake_adapter(s=3).to_dict()
    d["observation"]["language"]["prompt"] = {"template": PROMPT.template, "state_low": [0.0] * 3,
                                              "state_high": [1.0] * 3, "eps": 1e-8, "bins": 256}  # fmt: skip
    with pytest.raises(BundleError, match="needs the bundle's tokenizer"):
        AdapterSpec.from_dict(d)


def test_a_run_with_a_fixed_prompt_is_refused_for_a_state_in_the_prompt_policy(tmp_path):
    """pi0.5 writes each observation's state into its prompt: a prompt fixed before the loop
    would drop it, so legato run (--port and --sim) refuses the bundle in one line."""
    from edge.simrig import sim_instruction

    lang = LanguageSpec(tokens="tokens", mask="mask", max_tokens=6, vocab_size=14, pad_id=0,
                        tokenizer="tokenizer.json", append="", prompt=PROMPT)  # fmt: skip
    man = SimpleNamespace(adapter=SimpleNamespace(observation=SimpleNamespace(language=lang)), path=tmp_path)
    for run in (lambda: instruction(man, prompt="pick up the cube"), lambda: instruction(man),
                lambda: sim_instruction(man, np.zeros((2, 6), np.int64))):  # fmt: skip
        with pytest.raises(UsageError, match="writes each observation's state into its prompt") as e:
            run()
        assert "\n" not in str(e.value)
