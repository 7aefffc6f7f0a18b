"""The side-by-side bench's report of a saved run, also of one cut short (bench/fs_bench.py)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.fs_bench import from_samples, main, report


def partial() -> dict:
    # two finished rounds; a third one cut short left nothing for moosefs
    return {
        "partial": True,
        "samples": {
            "shoalfs": {"create/s": [400.0, 440.0, 999.0], "stat/s": [10.0, 30.0, 20.0]},
            "moosefs": {"create/s": [2000.0, 2400.0], "stat/s": [100.0, 60.0]},
        },
    }


def test_a_cut_short_run_is_reported_over_the_rounds_every_system_finished() -> None:
    result = from_samples(partial())
    assert result["rounds"] == 2
    assert result["medians"]["shoalfs"] == {"create/s": 420.0, "stat/s": 20.0}
    assert result["medians"]["moosefs"] == {"create/s": 2200.0, "stat/s": 80.0}
    text = report(result)
    assert "medians of 2 interleaved rounds" in text
    create = next(line for line in text.splitlines() if line.startswith("create/s"))
    assert create.split()[-1] == "0.19"  # 420 / 2200


def test_from_json_runs_nothing_and_prints_the_table(tmp_path: Path, capsys) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(partial()))
    assert main(["--from-json", str(saved), "--systems", "shoalfs,moosefs"]) == 0
    assert "stat/s" in capsys.readouterr().out
