"""The recording format's camera layouts read back: a recording made before the cameras were named
(one /camera channel, frame_id "camera", chunk messages without "cameras") and a policy without a
camera (no frame channel)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from edge.images import encode_png
from edge.loop import CHUNK_BASE_COLS
from edge.policy import ChunkRequest
from edge.recorder import Recorder, RecordOptions
from edge.recording import CAMERA, CHUNK, OBSERVATION, SCHEMAS, image_message, read_recording

STAGES = ("prefix", "step0", "blend", "engines", "chunk")


def test_a_recording_made_before_cameras_were_named_reads_as_one_camera(tmp_path):
    from mcap.writer import Writer

    path = tmp_path / "old.mcap"
    img = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    with open(path, "wb") as f:  # the session-2 layout, written as that recorder wrote it
        w = Writer(f)
        w.start(profile="legato", library="legato-edge 0.1")
        ch = {}
        for topic in (CAMERA, OBSERVATION, CHUNK):
            schema = dict(SCHEMAS[topic])
            sid = w.register_schema(schema["title"], "jsonschema", json.dumps(schema).encode())
            ch[topic] = w.register_channel(topic, "json", sid)
        w.add_metadata("legato.run", {"json": json.dumps({"format": "legato-recording", "spec": {}})})
        plan = np.zeros((16, 3)).tolist()
        for seq in range(2):
            msgs = {
                CAMERA: image_message(1.0 + seq, seq, encode_png(img), "png"),  # frame_id "camera"
                OBSERVATION: {"seq": seq, "chunk": seq, "state": [0.0] * 6, "tokens": [1, 2]},
                CHUNK: {
                    "seq": seq,
                    "chunk": seq,
                    "d": 1,
                    "s": 8,
                    "r": 2,
                    "omega": [0.0] * 16,
                    "reference": None,
                    "noise": plan,
                    "plan": plan,
                    "latency_ms": 5.0,
                    "capture_time": 1.0 + seq,
                    "ready_time": 1.01 + seq,
                },  # fmt: skip
            }
            for topic, m in msgs.items():
                w.add_message(ch[topic], int((1 + seq) * 1e9), json.dumps(m).encode(), int((1 + seq) * 1e9))
        w.finish()
    r = read_recording(path)
    assert r.complete and len(r.chunks) == 2 and r.cameras == ["camera"]
    c = r.chunks[0]
    assert c.single and list(c.images) == ["camera"] and np.array_equal(c.frame(), img)


def test_a_policy_without_a_camera_records_no_frame_channel(tmp_path):
    path = tmp_path / "nocam.mcap"
    rec = Recorder(RecordOptions(str(path)), {"format": "legato-recording", "cameras": []})
    row = np.zeros(len(CHUNK_BASE_COLS) + len(STAGES))
    plan = np.ones((16, 3), np.float32)
    frame = SimpleNamespace(image=np.zeros((0,), np.uint8), tokens=None, state=np.zeros(6, np.float32))
    for i in range(3):
        rec.on_chunk(i, frame, ChunkRequest(d=1, s=8, r=2), None, None, plan, plan, row, STAGES)
    stats = rec.close()
    assert stats["record.chunks"] == 3 and stats["record.frames"] == 0 and stats["record.stopped"] is None
    r = read_recording(path)
    assert len(r.chunks) == 3 and not any(t.startswith(CAMERA) for t in r.counts)
    assert r.chunks[0].images == {} and r.chunks[0].frame().size == 0 and r.cameras == []
