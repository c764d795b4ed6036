"""flash, service and doctor load and run with torch unimportable (the robot's core install)."""

from __future__ import annotations

import subprocess
import sys

BLOCK = "import sys; sys.modules['torch'] = None; sys.modules['matplotlib'] = None\n"


def run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=120)


def test_deploy_modules_import_without_torch():
    out = run_py(
        "import deploy.agent, deploy.cli, deploy.doctor, deploy.flash, deploy.service, deploy.targets\n"
        "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]"
    )
    assert out.returncode == 0, out.stderr


def test_commands_run_without_torch(tmp_path):
    code = (
        "from legato.cli import main\n"
        f"rc = main(['doctor', '--profile', 'x86-cpu', '--bundle-dir', {str(tmp_path)!r}, '--json'])\n"
        "rc2 = main(['service', 'install', '--profile', 'x86-cpu', '--print'])\n"  # the README's example
        f"rc3 = main(['flash', '--check', '--target', {str(tmp_path / 'none')!r}])\n"
        "print('RC', rc, rc2, rc3)\n"
    )
    out = run_py(code)
    assert out.returncode == 0 and "RC 1 0 2" in out.stdout, out.stderr  # doctor: no bundle flashed there
    assert "no current release" in out.stderr
