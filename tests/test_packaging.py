"""The distribution: every package folder is listed, and a built wheel holds what runs.

The top-level folders install under ``scabench.*`` through a package-dir mapping
(pyproject.toml), so a package folder missing from the list would work in the editable
install used here and be absent from a wheel a user installs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_of(folder: Path, package_dir: dict[str, str]) -> str:
    relative = folder.relative_to(REPO).as_posix()
    for package, where in sorted(package_dir.items(), key=lambda kv: -len(kv[1])):
        if relative == where or relative.startswith(where + "/"):
            rest = relative[len(where):].strip("/")
            return ".".join([package, *rest.split("/")]) if rest else package
    raise AssertionError(f"{relative} is under no package-dir mapping")


def test_every_package_folder_is_listed():
    setuptools = _setuptools()
    package_dir = setuptools["package-dir"]
    found = {
        _package_of(init.parent, package_dir)
        for where in package_dir.values()
        for init in (REPO / where).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found == set(setuptools["packages"])


def test_wheel_holds_every_module_and_the_kernel_source(tmp_path):
    source = tmp_path / "source"  # a copy: setuptools leaves build/ in the tree it builds
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "scabench", "losses", "detectors", "bench", "reports"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = tmp_path.glob("scabench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package_dir = _setuptools()["package-dir"]
    expected = set()
    for package, where in package_dir.items():
        for module in (REPO / where).rglob("*.py"):
            if "__pycache__" in module.parts:
                continue
            inner = module.relative_to(REPO / where).as_posix()
            expected.add("/".join([*package.split("."), inner]))
    expected.add("scabench/bench/studies/kernel.c")
    assert expected <= names, sorted(expected - names)[:10]
    assert not any(n.startswith(("losses/", "detectors/", "bench/", "reports/")) for n in names)
