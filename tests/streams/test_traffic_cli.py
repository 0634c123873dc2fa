"""``plietsch traffic assign``: results, progress and errors a person can act on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "traffic"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", "traffic", "assign", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_assign_tntp_prints_the_result_and_progress() -> None:
    res = _cli("--tntp-net", str(FIX / "ring_net.tntp"), "--tntp-trips", str(FIX / "ring_trips.tntp"), "--gap", "1e-4", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["converged"] and out["relative_gap"] < 1e-4 and out["iterations"] > 1
    assert out["tstt"] > out["beckmann_objective"] > 0 and out["trips"] == 6000.0 and out["links"] == 18
    assert "iteration 1: relative gap" in res.stderr and "4 zones, 6,000.0 trips" in res.stderr
    text = _cli("--tntp-net", str(FIX / "ring_net.tntp"), "--tntp-trips", str(FIX / "ring_trips.tntp"))
    assert "Beckmann objective" in text.stdout and "total system travel time" in text.stdout and "(converged)" in text.stdout


def test_an_unconverged_run_exits_non_zero() -> None:
    res = _cli("--tntp-net", str(FIX / "ring_net.tntp"), "--tntp-trips", str(FIX / "ring_trips.tntp"), "--max-iterations", "2")
    assert res.returncode == 1 and "NOT converged" in res.stdout


def test_errors_name_what_to_fix(tmp_path: Path) -> None:
    res = _cli("--tntp-net", str(tmp_path / "nope.tntp"), "--tntp-trips", str(FIX / "ring_trips.tntp"))
    assert res.returncode == 2 and "nope.tntp: no such network file" in res.stderr
    res = _cli("--tntp-net", str(FIX / "ring_net.tntp"))
    assert res.returncode == 2 and "give --tntp-net and --tntp-trips" in res.stderr
    bad = tmp_path / "bad_trips.tntp"
    bad.write_text("<NUMBER OF ZONES> 4\n<END OF METADATA>\nOrigin 1\n 2 : many;\n", encoding="utf-8")
    res = _cli("--tntp-net", str(FIX / "ring_net.tntp"), "--tntp-trips", str(bad))
    assert res.returncode == 2 and "line 4 (origin 1): '2 : many' is not 'zone : trips'" in res.stderr
    res = _cli("--tntp-net", str(FIX / "ring_net.tntp"), "--tntp-trips", str(FIX / "ring_trips.tntp"), "--gap", "2")
    assert res.returncode == 2 and "relative gap 2.0 must lie between 0 and 1" in res.stderr


def test_assign_the_bundled_pack() -> None:
    res = _cli("--pack", str(ROOT / "twin" / "regions" / "kiel"), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["converged"] and out["zones"] > 2 and "SYNTHETIC" in res.stderr
