"""The suite's pytest configuration needs no optional plugin (#17, item 9).

``addopts`` used to carry ``--benchmark-disable``, an option of pytest-benchmark: without that
plugin every pytest run stopped with "unrecognized arguments", although no test uses the
``benchmark`` fixture (the benchmarks are the scripts in benchmarks/, smoke-tested in
tests/test_benchmarks.py).
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_suite_collects_without_pytest_benchmark():
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:benchmark", "-p", "no:cacheprovider",
                        "--collect-only", "-q", "tests/test_metrics.py"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "tests collected" in r.stdout


def test_no_test_uses_the_benchmark_fixture():
    """If one ever does, pytest-benchmark becomes a real requirement of the test extra."""
    import re
    uses = [p.name for p in (ROOT / "tests").rglob("test_*.py")
            if re.search(r"def test_\w+\([^)]*\bbenchmark\b", p.read_text())]
    assert uses == []


def test_plain_pytest_finds_tools_and_benchmarks():
    """``pytest`` (the console script, which does not put the current folder on the path) collects
    the tests that import tools/ and benchmarks/, as ``python -m pytest`` does: pyproject's
    ``pythonpath``.  ``-P`` keeps the current folder off the path here the same way."""
    r = subprocess.run([sys.executable, "-P", "-c", "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))",
                        "-p", "no:cacheprovider", "--collect-only", "-q",
                        "tests/inference/test_shipped_models.py", "tests/test_preset_study.py"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "error" not in r.stdout.lower()
