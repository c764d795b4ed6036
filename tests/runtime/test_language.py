"""edge.language: the instruction as the policy takes it, from --tokens or a --prompt tokenized
with the bundle's tokenizer file, checked against the adapter's language section."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge.adapter import LanguageSpec
from edge.errors import UsageError
from edge.language import encode_prompt, instruction, load_tokenizer, pad_ids, parse_token_list

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
