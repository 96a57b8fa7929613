"""A non-editable install works: ``pip install .`` into a fresh virtual environment, then the README's commands
from the checkout: ``python train.py ...`` and ``python scripts/make_tables.py <run dir>``.

The project's files (what ``git ls-files`` lists, plus new files git does not ignore; without git, the folder minus
.git and generated outputs) are copied to a temporary folder. A venv made with ``--system-site-packages`` takes torch
and every other dependency from this machine, so no network is needed, and
``pip install --no-deps --no-build-isolation --no-index <copy>`` builds and installs a real wheel into it.

This machine's site-packages may hold an editable install of the project (a .pth file adding its src/ to
``sys.path``): the test checks that the venv's own installed copy is the one imported, never a src/ folder.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from project_config import PROJECT_ROOT, TINY

TIMEOUT = 600
# what a copy without git leaves out: git's folder and what the project's .gitignore names as generated
NOT_COPIED = (
    ".git",
    "data",
    "outputs",
    "multirun",
    "wandb",
    "build",
    "dist",
    ".venv",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    "*.pyc",
)


def project_files() -> list[str] | None:
    """The project's files, relative to its root, as git sees them (tracked, plus untracked files it does not
    ignore); None where git or the repository is not available."""
    if shutil.which("git") is None:
        return None
    res = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
    )
    if res.returncode != 0:
        return None
    return sorted({name for name in res.stdout.decode().split("\0") if name})


def copy_project(dst: Path) -> Path:
    files = project_files()
    if files is None:
        shutil.copytree(PROJECT_ROOT, dst, ignore=shutil.ignore_patterns(*NOT_COPIED), symlinks=True)
        return dst
    for name in files:
        src = PROJECT_ROOT / name
        if not src.exists() and not src.is_symlink():  # tracked but deleted in the working tree
            continue
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / name, follow_symlinks=False)
    return dst


def clean_env() -> dict[str, str]:
    """This environment without anything that points Python, pip or the project elsewhere: no PYTHONPATH (empty),
    no user site-packages, no FLOWMIXUP_* settings, no package index, no pip cache."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLOWMIXUP_", "PIP_")) and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env.update(
        PYTHONPATH="", PYTHONNOUSERSITE="1", PIP_NO_INDEX="1", PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1"
    )
    return env


def sh(args: list, cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    res.out = res.stdout + res.stderr
    assert res.returncode == 0, f"`{' '.join(map(str, args))}` (in {cwd}) exited {res.returncode}:\n{res.out[-4000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the copy of the project, the venv's python, its site-packages), the project installed non-editable."""
    tmp = tmp_path_factory.mktemp("install")
    copy = copy_project(tmp / "project")
    assert (copy / "pyproject.toml").is_file() and (copy / "train.py").is_file()
    # --without-pip: the pip and setuptools that ensurepip would put in the venv are older than this machine's
    # (Python 3.11 bundles setuptools 65, which cannot build a wheel without the `wheel` package); the venv's
    # python runs the system pip, which installs into the venv, and builds with the system setuptools
    sh([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", tmp / "venv"], cwd=tmp)
    python = tmp / "venv" / "bin" / "python"
    # where pytest itself runs in a virtual environment, --system-site-packages reaches only the base interpreter's
    # packages: the venv also reads this interpreter's site-packages (with their .pth files), after its own
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    venv_site = Path(sh([python, "-c", purelib], cwd=tmp).stdout.strip())
    (venv_site / "_outer_site_packages.pth").write_text(
        "".join(f"import site; site.addsitedir({d!r})\n" for d in site.getsitepackages())
    )
    res = sh([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", copy], cwd=tmp)
    assert "Successfully installed flowmixup" in res.out, res.out[-4000:]
    return copy, python, venv_site


WHERE = """
import json
from importlib import resources
import flowmixup, flowmixup.report, hydra_plugins.flowmixup_local_gpus as plugin
print(json.dumps({"flowmixup": flowmixup.__file__, "plugin": plugin.__file__,
                  "data": sorted(p.name for p in resources.files("flowmixup.report").iterdir()
                                 if p.suffix in (".csv", ".md"))}))
"""


@pytest.mark.slow
def test_the_venv_imports_its_installed_copy(installed, tmp_path):
    copy, python, site = installed
    # from a folder where no src/ is on sys.path, and from the copy's root, as train.py is run
    for cwd in (tmp_path, copy):
        found = json.loads(sh([python, "-c", WHERE], cwd=cwd).stdout)
        for key in ("flowmixup", "plugin"):
            path = Path(found[key]).resolve()
            assert path.is_relative_to(site.resolve()), (key, path, site)
            assert not path.is_relative_to(PROJECT_ROOT / "src") and not path.is_relative_to(copy / "src"), path
        # the package data the report reads (paper tables, published baselines, class names) and the notes beside
        # it (FIG6.md, PAPER_TABLES.md) are in the wheel
        report_src = PROJECT_ROOT / "src" / "flowmixup" / "report"
        assert found["data"] == sorted(p.name for p in report_src.iterdir() if p.suffix in (".csv", ".md"))


@pytest.mark.slow
def test_train_then_make_tables_from_the_checkout(installed, tmp_path):
    copy, python, _ = installed
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith("trainer.epochs=")]
    sh(
        [
            python,
            "train.py",
            "trainer.epochs=1",
            *overrides,
            f"paths.data_dir={tmp_path / 'data'}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=copy,
    )
    for name in (
        "config.yaml",
        "metrics.csv",
        "per_class.csv",
        "predictions_test_last.npz",
        "predictions_test_best.npz",
        "labels_train_clean.npz",
        "checkpoint.pt",
        "summary.json",
    ):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert len((run_dir / "metrics.csv").read_text().strip().splitlines()) == 1 + 1  # header, one epoch

    res = sh([python, "scripts/make_tables.py", run_dir], cwd=copy)
    report = run_dir / "report"
    for name in ("report.md", "table1.md", "table1.csv", "table1.tex"):
        assert (report / name).is_file(), (name, sorted(p.name for p in report.iterdir()))
        assert str(report / name) in res.stdout
