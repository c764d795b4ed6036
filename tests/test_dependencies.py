"""Dependency rules from docs/architecture.md that must hold."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROBOT_PACKAGES = ("edge", "firmware_bridge", "deploy")


def _modules(package: str) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if "micropython" in rel.parts:  # MicroPython sources run on the microcontroller, not here
            continue
        out.append(".".join(rel.parts).removesuffix(".__init__"))
    return out


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ROBOT_PACKAGES)
def test_robot_packages_import_without_torch(package):
    """Run in a fresh interpreter where `import torch` fails, as on the robot."""
    mods = _modules(package)
    code = "import sys; sys.modules['torch'] = None\n" + "".join(f"import {m}\n" for m in mods)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("package", ROBOT_PACKAGES)
def test_robot_packages_never_name_torch(package):
    for path in (ROOT / package).rglob("*.py"):
        assert "torch" not in _imports(path), path


def test_edge_imports_neither_export_nor_training_code():
    for path in (ROOT / "edge").rglob("*.py"):
        bad = _imports(path) & {"export", "legato", "torch"}
        assert not bad, f"{path} imports {bad}"


def test_firmware_bridge_knows_nothing_about_policies():
    for path in (ROOT / "firmware_bridge").rglob("*.py"):
        bad = _imports(path) & {"edge", "legato", "export", "sim"}
        assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("package", ["edge", "firmware_bridge", "deploy", "sim"])
def test_robot_side_code_parses_as_python_3_10(package):
    for path in (ROOT / package).rglob("*.py"):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


def test_training_takes_the_schedule_from_edge():
    pytest.importorskip("torch")
    import edge.schedule
    import legato.objectives

    assert legato.objectives.omega_batch is edge.schedule.omega_batch
