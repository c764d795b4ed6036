"""`legato export` (workstation, torch), `legato profiles list|show` and `legato bundle verify|info`
(robot side: torch-free, core install only). Importing this module imports nothing heavy; each
command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json

from edge.cliargs import int_in


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="checkpoint + device profile -> verified bundle (ONNX, int8/fp16, engines)"
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, e.g. models/legato")
    p.add_argument("--profile", default="x86-cpu", help="profile name (legato profiles list) or a .toml path")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        default=None,
        help="graph precision (default: the profile's flow-head precision)",
    )
    p.add_argument(
        "--engines",
        action="store_true",
        help="also build TensorRT engines (only where TensorRT is installed: on the device)",
    )
    p.add_argument(
        "--episodes",
        type=int_in(0, 10000),
        default=100,
        help="held-out closed-loop episodes for the fp16/int8 gate (0 skips it for fp32)",
    )
    p.add_argument(
        "--parity-samples", type=int_in(1, 1000), default=16, help="held-out observations for chunk parity"
    )
    p.add_argument(
        "--calibration",
        default=None,
        help="int8 QDQ calibration observations (.npz: image, tokens, state); default: simulator rollouts",
    )
    p.add_argument("--threads", type=int_in(1, 256), default=1, help="torch and onnxruntime threads")
    p.add_argument(
        "--attention",
        choices=["auto", "standard", "onnxruntime"],
        default="auto",
        help="attention ops: standard (MatMul-Softmax-MatMul, what TensorRT fuses), onnxruntime "
        "(its fused CPU op, CPU-only profiles), auto (by the profile)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.set_defaults(func=run_export)

    p = sub.add_parser("profiles", help="device profiles: list them, show one (robot side, no torch)")
    ss = p.add_subparsers(dest="profiles_cmd", required=True, metavar="{list,show}")
    ss.add_parser("list", help="list the bundled profiles").set_defaults(func=profiles_list)
    s = ss.add_parser("show", help="load (schema-check) and print a profile")
    s.add_argument("profile", help="profile name or path to a .toml file")
    s.set_defaults(func=profiles_show)

    p = sub.add_parser("bundle", help="check, describe or run an exported bundle (robot side, no torch)")
    ss = p.add_subparsers(dest="bundle_cmd", required=True, metavar="{verify,info,infer}")
    v = ss.add_parser("verify", help="check every sha256, load every graph, check the config")
    v.add_argument("bundle", help="bundle folder")
    v.set_defaults(func=bundle_verify)
    i = ss.add_parser("info", help="print the model, graphs, precision, parity and engine keys")
    i.add_argument("bundle", help="bundle folder")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(func=bundle_info)
    f = ss.add_parser(
        "infer",
        help="one chunk from recorded inputs (OBS.npz with LeRobot feature names) through the robot's "
        "denoiser",
    )
    f.add_argument("--bundle", required=True, help="bundle folder")
    f.add_argument(
        "--obs",
        required=True,
        help="observation .npz: observation.images.<camera> uint8 (H, W, 3), observation.state, and "
        "task (a prompt) or observation.language.tokens [/ attention_mask]",
    )
    f.add_argument("--noise", default=None, help="noise .npy in the policy's shape (H, padded action dim)")
    f.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0, help="noise seed without --noise")
    f.add_argument(
        "--prev", default=None, help="executing chunk from the new chunk's index 0 on, .npy (k, a)"
    )
    f.add_argument(
        "--delay", type=int_in(0, 10_000), default=None, help="delay d with --prev (control steps)"
    )
    f.add_argument(
        "--ramp", type=int_in(0, 10_000), default=None, help="ramp r (default: min(r_max, H - s - d))"
    )
    f.add_argument(
        "--profile", default=None, help="run on this profile's engines (default: onnxruntime, CPU)"
    )
    f.add_argument("--fused", action="store_true", help="the fused graph instead of prefix + flow head")
    f.add_argument("--out", required=True, help="the chunk, .npy (H, a) in the robot's units")
    f.add_argument("--force", action="store_true", help="replace an existing --out written by legato")
    f.set_defaults(func=bundle_infer)


def run_export(a: argparse.Namespace) -> int:
    from export.pipeline import ExportOptions, export_bundle

    export_bundle(
        ExportOptions(
            checkpoint=a.checkpoint,
            profile=a.profile,
            out=a.out,
            precision=a.precision,
            engines=a.engines,
            force=a.force,
            parity_samples=a.parity_samples,
            episodes=a.episodes,
            calibration=a.calibration,
            threads=a.threads,
            attention=a.attention,
        )
    )
    return 0


def profiles_list(a: argparse.Namespace) -> int:
    from edge.profiles import list_profiles, load_profile

    for name in list_profiles():
        p = load_profile(name)
        e = p.engine("flow_head")
        print(f"{name:24s} {p.device.soc:5s} {e.backend:11s} {e.precision:5s} {p.description}")
    return 0


def profiles_show(a: argparse.Namespace) -> int:
    from edge.profiles import load_profile

    p = load_profile(a.profile)
    print(f"# {p.path}")
    print(json.dumps(p.to_dict(), indent=1))
    return 0


def bundle_verify(a: argparse.Namespace) -> int:
    from edge.bundle import verify

    m = verify(a.bundle)
    print(f"{m.path}: ok ({len(m.files)} files, graphs {', '.join(m.graphs)}, {m.precision})")
    return 0


def bundle_info(a: argparse.Namespace) -> int:
    from edge.bundle import load_manifest, summary

    m = load_manifest(a.bundle)
    if a.json:
        print(json.dumps(m.data, indent=1))
    else:
        print("\n".join(summary(m)))
    return 0


def _is_npy(path: object) -> bool:
    try:
        with open(str(path), "rb") as f:
            return f.read(6) == b"\x93NUMPY"
    except OSError:
        return False


def bundle_infer(a: argparse.Namespace) -> int:
    import io

    import numpy as np

    from edge.infer import infer
    from edge.outputs import atomic_file, check_file_target

    check_file_target(a.out, replace=a.force, what=".npy chunk", own=_is_npy)  # before any work
    chunk = infer(a.bundle, a.obs, noise=a.noise, prev=a.prev, delay=a.delay, ramp=a.ramp, seed=a.seed,
                  profile=a.profile, fused=a.fused)  # fmt: skip
    buf = io.BytesIO()
    np.save(buf, chunk)
    atomic_file(a.out, buf.getvalue(), replace=a.force, what=".npy chunk", own=_is_npy)
    print(f"{a.out}: chunk {list(chunk.shape)} (robot units), min {chunk.min():.4f}, max {chunk.max():.4f}")
    return 0
