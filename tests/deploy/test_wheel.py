"""A wheel built from the checkout is the whole gateway: installed anywhere, it serves its pages.

The slow test builds the wheel as `pip install .` and deploy/Dockerfile do, from a copy of
the checkout (no build/ folder lands in the working tree, and a file edited meanwhile
cannot make the comparisons flaky). It reads the wheel's file list, installs the wheel
into a fresh virtualenv and runs that virtualenv's `buildcast` from an empty folder:
every page, every file the pages load and the API document must come out of
site-packages, byte for byte the sources. The fresh virtualenv borrows this one's
dependencies through a .pth file (nothing is downloaded), which does not run the
editable install's import hook: `gateway` imports from the wheel, as the test checks.
The wheel's size and file list are printed and kept in tests/deploy/artifacts/wheel.json.
"""

from __future__ import annotations

import ast
import email
import importlib.metadata
import json
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway import __version__
from tests.helpers import procs as procs_module
from tests.helpers.procs import ROOT, Procs

ARTIFACT = Path(__file__).parent / "artifacts" / "wheel.json"
PIP = [sys.executable, "-m", "pip"]
# Run by the installed interpreter: every module of the package imports, and settings
# says where it found the pages and the API document.
WHERE = """
import importlib, json, pkgutil
import gateway, gateway.settings as s
for found in pkgutil.walk_packages(gateway.__path__, "gateway."):
    importlib.import_module(found.name)
print(json.dumps([s.__file__, str(s.WEB_ROOT), str(s.API_DOCUMENT)]))
"""

# The checkout, less what is local or generated: docs/ and tests/ are copied so the
# test sees that they stay out of the wheel.
LOCAL = shutil.ignore_patterns(
    ".*", "__pycache__", "*.egg-info", "build", "dist", "artifacts", "results", "node_modules"
)

# Mapped onto folders outside gateway/ (pyproject.toml's package-dir): the data the
# wheel carries for gateway.settings' WEB_ROOT and API_DOCUMENT.
MAPPED = {"gateway.web": "web", "gateway.openapi": "docs"}

# A file a page, script or style sheet loads: src="/static/x.js", url(/static/x.png), ...
REFERENCE = re.compile(r"""["'`(]/static/([\w.-]+)""")


def test_pyproject_lists_every_package_of_gateway() -> None:
    """A mapped package cannot be found, so pyproject.toml lists them all: exactly these."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == MAPPED
    found = {
        ".".join(folder.relative_to(ROOT).parts)
        for folder in [ROOT / "gateway", *(ROOT / "gateway").rglob("*")]
        if folder.is_dir() and any(folder.glob("*.py"))
    }
    listed = set(config["packages"])
    assert listed - MAPPED.keys() == found, "pyproject.toml's [tool.setuptools] packages"
    assert MAPPED.keys() <= listed


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_the_wheel_installs_anywhere_and_serves_its_pages_from_site_packages(
    tmp_path: Path, procs: Procs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)  # only the fresh virtualenv's own paths
    source = tmp_path / "checkout"
    shutil.copytree(ROOT, source, ignore=LOCAL)
    # Built offline with this virtualenv's setuptools (the Dockerfile lets pip isolate the
    # build), so this virtualenv must hold what the isolated build environment would.
    build_system = tomllib.loads((source / "pyproject.toml").read_text())["build-system"]
    for requirement in map(Requirement, build_system["requires"]):
        here = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(here), f"{requirement}: {here} here"
    started = time.monotonic()
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    run(*PIP, "wheel", *offline, "--wheel-dir", tmp_path / "dist", source, timeout=180)
    build_seconds = time.monotonic() - started
    (wheel,) = (tmp_path / "dist").glob("buildcast-*.whl")
    assert wheel.name == f"buildcast-{__version__}-py3-none-any.whl"  # gateway.__version__
    with zipfile.ZipFile(wheel) as archive:
        contents = {info.filename: info.file_size for info in archive.infolist()}
        carried = {name: archive.read(name) for name in contents}
    listing = "\n".join(f"{size:>9}  {name}" for name, size in contents.items())
    print(f"{wheel.name}: {wheel.stat().st_size} bytes, {len(contents)} files\n{listing}")

    # The pages and the API document, as gateway/web and gateway/openapi; nothing else
    # of the checkout but the package (no tests, no docs' prose or images).
    pages = sorted(p for p in (source / "web").iterdir() if p.is_file() and p.name[0] != ".")
    document = source / "docs" / "openapi.yaml"
    for page in pages:
        assert carried.get(f"gateway/web/{page.name}") == page.read_bytes(), page.name
    assert {n for n in contents if n.startswith("gateway/web/")} == {
        f"gateway/web/{page.name}" for page in pages
    }
    assert carried.get("gateway/openapi/openapi.yaml") == document.read_bytes()
    assert [n for n in contents if n.startswith("gateway/openapi/")] == [
        "gateway/openapi/openapi.yaml"
    ]
    modules = {p.relative_to(source).as_posix() for p in (source / "gateway").rglob("*.py")}
    assert modules <= contents.keys(), sorted(modules - contents.keys())
    dist_info = f"buildcast-{__version__}.dist-info/"
    strays = [n for n in contents if not n.startswith(("gateway/", dist_info))]
    assert not strays, strays
    assert not [n for n in contents if n.endswith(".md") or "/images/" in n]
    assert "buildcast = gateway.cli:main" in carried[dist_info + "entry_points.txt"].decode()

    # A fresh virtualenv, without pip: this pip installs into it, from the file alone.
    venv = tmp_path / "venv"
    started = time.monotonic()
    run(sys.executable, "-m", "venv", "--without-pip", venv, timeout=60)
    python = venv / "bin" / "python"
    run(*PIP, "--python", python, "install", "--no-deps", "--no-index", wheel, timeout=120)
    install_seconds = time.monotonic() - started
    installed = Path(sysconfig.get_path("purelib", vars={"base": venv, "platbase": venv}))
    # The dependencies: this virtualenv's site-packages as plain paths. The .pth files in
    # them (the editable install's hook among them) are not run, so the checkout is not
    # importable there.
    (installed / "borrowed-dependencies.pth").write_text("\n".join(site.getsitepackages()))
    empty = tmp_path / "empty"
    empty.mkdir()
    where = run(python, "-c", WHERE, cwd=empty, timeout=60)
    module, web_root, api_document = map(Path, json.loads(where))
    assert module.is_relative_to(installed), f"gateway imported from {module}, not the wheel"
    assert web_root == installed / "gateway" / "web"
    assert api_document == installed / "gateway" / "openapi" / "openapi.yaml"
    # Borrowing all of this virtualenv must not hide a dependency the wheel fails to name.
    code = {name: text for name, text in carried.items() if name.endswith(".py")}
    metadata = email.message_from_bytes(carried[dist_info + "METADATA"])
    undeclared = imported(code) - required(metadata.get_all("Requires-Dist") or [])
    assert not undeclared, f"the package imports {sorted(undeclared)}, which the wheel lacks"
    buildcast = venv / "bin" / "buildcast"
    assert "serve" in run(buildcast, "--help", cwd=empty, timeout=60)

    # The installed command, run from the empty folder: the simulator, and a gateway on it.
    monkeypatch.setattr(procs_module, "BUILDCAST", [str(buildcast)])
    monkeypatch.setattr(procs_module, "ROOT", empty)
    simulator = procs.simulate()
    gateway = procs.serve(simulator.url)
    served = {
        "/": "index.html",
        "/builds/x": "build.html",
        "/wall": "wall.html",
        "/status": "status.html",
    }
    for path, name in served.items():
        assert get(gateway.url + path) == (source / "web" / name).read_bytes(), path
    referenced = {name for page in pages for name in REFERENCE.findall(page.read_text())}
    assert referenced, "no page loads a file under /static/"
    assert referenced <= {page.name for page in pages}, "pages load files web/ lacks"
    for page in pages:  # every file the pages load, and the rest of web/
        assert get(f"{gateway.url}/static/{page.name}") == page.read_bytes(), page.name
    api = json.loads(get(gateway.url + "/api/v1/openapi.json"))
    assert api == yaml.safe_load(document.read_text())
    assert list(empty.iterdir()) == []  # it wrote nothing where it ran

    record = {
        "wheel": wheel.name,
        "bytes": wheel.stat().st_size,
        "unpacked_bytes": sum(contents.values()),
        "files": len(contents),
        "build_seconds": round(build_seconds, 2),
        "install_seconds": round(install_seconds, 2),
        "contents": contents,
    }
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(record, indent=2) + "\n")


def imported(code: dict[str, bytes]) -> set[str]:
    """The distributions the modules (file: source) import from, besides the standard library."""
    tops = set()
    for file, source in code.items():
        for node in ast.walk(ast.parse(source, file)):
            if isinstance(node, ast.Import):
                tops |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.partition(".")[0])
    tops -= {*sys.stdlib_module_names, "gateway"}
    owners = importlib.metadata.packages_distributions()
    return {canonicalize_name(owner) for top in tops for owner in owners.get(top, [top])}


def required(requirements: list[str]) -> set[str]:
    """The distributions `requirements` (Requires-Dist, no extras) bring, transitively."""
    found: set[str] = set()
    read: set[tuple[str, str]] = set()  # (distribution, extra) whose requirements are pending
    pending = [(Requirement(text), "") for text in requirements]  # with the extra they need
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        found.add(name)
        for wanted in {"", *requirement.extras} - {e for n, e in read if n == name}:
            read.add((name, wanted))
            try:
                texts = importlib.metadata.requires(name) or []
            except importlib.metadata.PackageNotFoundError:
                texts = []
            pending += [(Requirement(text), wanted) for text in texts]
    return found


def run(*command: str | Path, timeout: float, cwd: Path | None = None) -> str:
    """Its stdout; a failure shows the command's output."""
    args = [str(part) for part in command]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, url
        body: bytes = response.read()
        return body
