"""The benchmark runs end to end at a tiny scale (its figures are never asserted: only that it works)."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def test_benchmark_runs_at_a_tiny_scale(project_root, tmp_path):
    # The bench's temporary folders (its servers' data: gigabytes at scale 1) go to a folder of this test's, short
    # (a Unix socket's path is limited to about 100 bytes: pytest's own folders are too deep), emptied by the bench.
    scratch = Path(tempfile.mkdtemp(prefix="gb-"))
    try:
        result = subprocess.run([sys.executable, "-m", "bench", "--scale", "0.002", "--repeat", "1",
                                 "--follow-seconds", "1", "--json", str(tmp_path / "bench.json")],
                                cwd=project_root, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "TMPDIR": str(scratch)})
        left = [path.name for path in scratch.iterdir() if path.name.startswith("gigsterpg-bench")]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not left, left
    for label in ("read-only", "first sync", "unchanged re-sync", "re-sync after changes", "transform + load",
                  "COPY of the same rows", "ORM merge() per document"):
        assert f"| {label} |" in result.stdout
    assert "rows rewritten: [0]" in result.stdout
    assert "touched exactly the changed rows: [True]" in result.stdout
    assert "- follow under a steady load of 200 inserts/s" in result.stdout
    assert "- incremental run on unchanged data at scale 0.002" in result.stdout
    assert "- export-orders of 1,000 orders: first run" in result.stdout and "documents written [0]" in result.stdout
    assert "- load-csv of a 6,000-row CSV file" in result.stdout and "/first-chunk (10 rows)" in result.stdout
    assert "- snapshots, extract-postgres of " in result.stdout and "- snapshots, load of a day" in result.stdout
    assert (tmp_path / "bench.json").stat().st_size > 0


def test_the_bench_finds_its_parts_from_the_registry():
    from bench import parts
    from gigsterpg import pipelines
    from tests import toy_pipeline

    assert parts.unmeasured() == ["transform"]  # no part measures it yet, and the bench says so
    assert [part.ONLY for part in parts.in_order()] == ["distributed", "orders", "snapshots", "datasets"]
    undo = pipelines.register(toy_pipeline.PIPELINE)
    try:
        assert parts.unmeasured() == ["transform", toy_pipeline.PIPELINE.name]  # named, not lost
    finally:
        undo()


def test_a_child_reports_its_own_peak_rss_not_its_parents(project_root):
    """Linux keeps ``ru_maxrss`` across exec: a benchmark child would report the benchmark's own peak."""
    ballast = bytearray(400 * 1024 * 1024)  # the parent's peak: 400 MB more, touched
    ballast[::4096] = b"x" * len(ballast[::4096])
    measured = subprocess.run([sys.executable, "-c", "from bench.rss import peak_rss_mb; print(peak_rss_mb())"],
                              capture_output=True, text=True, check=True, cwd=project_root)
    del ballast
    assert 0 < float(measured.stdout) < 200
