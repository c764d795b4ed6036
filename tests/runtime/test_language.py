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


def _state_prompt_bundle(tmp_path, max_tokens: int = 16):
    """A bundle folder whose policy writes its state into its prompt (pi0.5's language section),
    with a WordLevel tokenizer that knows the template's words, the task's and every bin."""
    tokenizers = pytest.importorskip("tokenizers")
    words = ["<pad>", "<unk>", "Task", ":", ",", "State", ";", "Action", "pick", "up", "the", "cube",
             *map(str, range(256))]  # fmt: skip
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, "<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    lang = LanguageSpec(tokens="tokens", mask="mask", max_tokens=max_tokens, vocab_size=len(words), pad_id=0,
                        tokenizer="tokenizer.json", append="", prompt=PROMPT)  # fmt: skip
    man = SimpleNamespace(adapter=SimpleNamespace(observation=SimpleNamespace(language=lang)), path=tmp_path)
    return man, tok


def test_a_state_in_the_prompt_policy_takes_its_task_as_a_prompt_only(tmp_path):
    """pi0.5 writes each observation's state into its prompt: `legato run` needs the task as
    --prompt (ids fixed before the loop would drop the state), one line otherwise; the ids it
    starts from are all pad until the first frame's own prompt replaces them."""
    from edge.simrig import sim_instruction

    man, _ = _state_prompt_bundle(tmp_path)
    cases = ((lambda: instruction(man), r'give the task as --prompt "..."$'),
             (lambda: instruction(man, tokens="3,4"), 'as --prompt "...", not as --tokens'))  # fmt: skip
    for run, match in cases:
        with pytest.raises(UsageError, match=match) as e:
            run()
        assert "writes each observation's state into its prompt" in str(e.value) and "\n" not in str(e.value)
    np.testing.assert_array_equal(instruction(man, prompt="pick up the cube")[0], [0] * 16)
    ids = np.arange(6)
    assert sim_instruction(man, np.zeros((2, 6), np.int64))(ids) is ids  # each frame's prompt replaces them


def test_every_frame_carries_the_prompt_of_its_own_state(tmp_path):
    from edge.language import PromptedSource, state_prompter
    from edge.sources import Frame

    man, tok = _state_prompt_bundle(tmp_path)
    states = [np.array([0.0, 0.0, 2.0]), np.array([1.0, 4.0, 2.0]), np.array([-0.99, 1.0, 1.0])]
    frames = iter(Frame(np.zeros((2, 2, 3), np.uint8), np.zeros(16, np.int64), s, float(i))
                  for i, s in enumerate(states))  # fmt: skip
    build = state_prompter(man, ["pick up the cube"])
    assert build is not None
    src = PromptedSource(SimpleNamespace(read=lambda: next(frames)), build, lambda: "pick_up the cube")
    for bins in ("128 0 0", "255 255 0", "1 64 -1"):
        frame = src.read()
        want = tok.encode(f"Task: pick up the cube, State: {bins};\nAction: ").ids
        np.testing.assert_array_equal(frame.tokens, want + [0] * (16 - len(want)))
    assert state_prompter(SimpleNamespace(path=tmp_path), ["go"]) is None  # a policy server's model


def test_a_task_whose_prompt_does_not_fit_is_refused_before_the_run(tmp_path):
    """Checked at the state's extremes and middle before anything moves: refused, not truncated."""
    from edge.language import state_prompter

    man, _ = _state_prompt_bundle(tmp_path, max_tokens=14)
    assert state_prompter(man, ["cube"]) is not None  # 12 tokens; "pick up the cube" has 15
    with pytest.raises(UsageError, match="the bundle's model takes at most 14") as e:
        state_prompter(man, ["cube", "pick up the cube"])
    assert "\n" not in str(e.value)
