"""twin/ is the pure domain: it must not import kafka, faust or fastapi."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

FORBIDDEN = ("confluent_kafka", "faust", "fastapi", "aiokafka", "starlette", "uvicorn")


def test_twin_sources_import_no_infrastructure() -> None:
    offenders = []
    for path in (ROOT / "twin").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_twin_loads_no_infrastructure() -> None:
    mods = [p.stem for p in Path(ROOT / "twin").glob("*.py") if p.stem != "__init__"]
    code = ("import sys\n" + "".join(f"import twin.{m}\n" for m in mods) +
            f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\nprint(bad)\nsys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_api_does_not_load_the_faust_runtime() -> None:
    """The API reads the twin from Kafka topics; it never imports Faust (nor reads a Faust table)."""
    code = ("import sys\nimport api.main\nbad = [m for m in sys.modules if m.split('.')[0] in ('faust', 'mode')]\n"
            "print(bad)\nsys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
