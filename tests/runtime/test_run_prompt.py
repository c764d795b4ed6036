"""`legato run --port --prompt "..."`: the instruction tokenized on the robot with the bundle's
tokenizer file, checked before the motors, and fed to the policy."""

from __future__ import annotations

import numpy as np
import pytest
from test_run_port import controller, one_line, run  # noqa: F401 (fixtures; `video` is in conftest.py)


def test_prompt_reaches_the_policy_as_the_trained_ids(bundle, controller, video, capsys, monkeypatch):  # noqa: F811
    pytest.importorskip("tokenizers")
    from edge.sources import OpenCVSource

    seen = []
    real = OpenCVSource.read

    def spy(self):
        frame = real(self)
        seen.append(np.array(frame.tokens))
        return frame

    monkeypatch.setattr(OpenCVSource, "read", spy)  # the frames the loop's worker hands the policy
    rc, err = run(capsys, "--bundle", str(bundle), "--port", controller.port, "--camera", video, "--prompt",
                  "Reach the RED target", "--seconds", "1", "--quiet")  # fmt: skip
    assert rc == 0, err
    assert len(seen) > 2 and all(list(t) == [2, 5, 11, 8, 0, 0] for t in seen)


@pytest.mark.parametrize(
    "args,match",
    [(["--prompt", "reach the red target and then the blue"], "the bundle's model takes at most 6"),
     (["--prompt", " "], "--prompt is empty"),
     (["--prompt", "go", "--tokens", "2"], "not both")],
)  # fmt: skip
def test_bad_prompts_are_refused_before_the_motors(bundle, controller, video, capsys, args, match):  # noqa: F811
    pytest.importorskip("tokenizers")
    rc, err = run(capsys, "--bundle", str(bundle), "--port", controller.port, "--camera", video, *args,
                  "--seconds", "1", "--quiet")  # fmt: skip
    assert rc == 2 and match in one_line(err)
    assert controller.core.last_applied_seq in (0, None)  # no setpoint reached the controller
