"""Installable as users install it: build the wheel, install it (no dependencies) into a fresh virtual
environment that sees this environment's packages, and from another folder list the hardware and run
a shipped scenario on shipped data."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", "build", "dist", "runs", "out", "*.egg-info", "__pycache__", ".pytest_cache",
                              ".hypothesis", "reports", "notebooks", "tests")


@pytest.mark.slow
def test_wheel_installs_and_runs_from_elsewhere(tmp_path):
    pytest.importorskip("wheel")
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=SKIP)  # build a copy: no build/ or egg-info in the checkout
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(dist)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("simllm-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # an editable install of the checkout in the outer environment would shadow the wheel: hide its finder
    (site / "sitecustomize.py").write_text(
        "import sys\nsys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
        "(getattr(f, '__module__', '') or getattr(type(f), '__module__', ''))]\n"
        "sys.path[:] = [p for p in sys.path if not p.rstrip('/').endswith('/work/main')]\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--ignore-installed",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH: the installed copy

    def sim(*args):
        return subprocess.run([str(py), "-m", "simllm", *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=300)

    where = subprocess.run([str(py), "-c", "import simllm; print(simllm.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert str(venv) in where, where  # the wheel's copy, not the checkout
    r = sim("hw", "list")
    assert r.returncode == 0, r.stderr
    assert "h100-sxm" in r.stdout and "a100-sxm-80gb" in r.stdout
    r = sim("--version")
    assert r.returncode == 0 and r.stdout.startswith("simllm ")
    r = sim("run", "llama3-8b-h100-azure-conv", "--set", "workload.limit=100", "--out", "out", "--json")
    assert r.returncode == 0, r.stderr
    assert '"completed": 100' in r.stdout
    assert (elsewhere / "out" / "requests.csv").is_file()
    # a user folder adds to the shipped descriptors
    user = tmp_path / "mine" / "hardware" / "accelerators"
    user.mkdir(parents=True)
    shipped = Path(where.strip()).parent / "_data" / "hardware" / "accelerators" / "h100-sxm.yaml"
    (user / "my-gpu.yaml").write_text(shipped.read_text().replace("name: h100-sxm", "name: my-gpu"))
    env["SIMLLM_DATA"] = str(tmp_path / "mine")
    r = sim("hw", "list")
    assert r.returncode == 0 and "my-gpu" in r.stdout and "b200" in r.stdout, r.stderr
