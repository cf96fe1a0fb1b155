"""The wheel ``pip install`` builds from a checkout: what it carries and declares.

Built with ``pip wheel --no-build-isolation`` (the environment's own setuptools, so
no download) from a copy of the packaged files, so the checkout gets no ``build/``.
The quickstart (``scripts/quickstart-test``) installs and uses it end to end.
"""

from __future__ import annotations

import email.message
import email.parser
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("framework", "serving")
SUPPORTED = ("3.11", "3.12", "3.13")


def _packaged_sources() -> set[str]:
    """Every module, stub and type marker under the packages, and the spark profile's
    log settings (framework/spark/log4j2.properties), as wheel paths."""
    return {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and (path.suffix in (".py", ".pyi") or path.name in ("py.typed", "log4j2.properties"))
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (built,) = out.glob("parity-*.whl")
    return zipfile.ZipFile(built)


def _metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def test_the_wheel_carries_every_module_stub_and_type_marker_of_framework_and_serving(
    wheel: zipfile.ZipFile,
) -> None:
    names = set(wheel.namelist())
    packaged = {n for n in names if ".dist-info/" not in n}
    assert packaged == _packaged_sources()
    assert {"framework/py.typed", "serving/py.typed"} <= packaged
    assert any(n.startswith("serving/stubs/") and n.endswith("_pb2.pyi") for n in packaged)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_the_wheel_declares_the_parity_command_the_licence_and_pythons_3_11_to_3_13(
    wheel: zipfile.ZipFile,
) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "parity = framework.cli.main:main" in wheel.read(entry_points).decode()
    metadata = _metadata(wheel)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] in (">=3.11,<3.14", "<3.14,>=3.11")
    classifiers = metadata.get_all("Classifier") or []
    versions = {
        c.rsplit(" ", 1)[-1]
        for c in classifiers
        if c.startswith("Programming Language :: Python :: 3.")
    }
    assert versions == set(SUPPORTED)
    # The dependencies are the pyproject's, ranges and all (the lock is for development).
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert len(metadata.get_all("Requires-Dist") or []) >= len(declared)


def test_the_apache_licence_is_the_canonical_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
