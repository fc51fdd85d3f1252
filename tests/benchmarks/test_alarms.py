"""The alarms benchmark runs end to end on a few small nights: before alarms, after does not, the crowd day is caught."""

from __future__ import annotations

import pytest

from benchmarks.alarms import ZIPF_CATEGORICAL, generate_zipf, print_results, run_benchmark, upper_bound


@pytest.mark.integration  # a benchmark run end to end, however small
def test_a_few_nights_before_and_after(capsys) -> None:
    results = run_benchmark(sizes=(300, 5_000), nights=2, small_nights=2, detect_nights=1, night_rows=3_000,
                            scenarios=("crowd",), log=lambda msg: None)
    small, large = results["false_alarms"]["zipf"]["300"], results["false_alarms"]["zipf"]["5000"]
    assert small["preset"]["alarms"] == 2 and small["preset"]["warnings"] > 0  # today's false alarm, with warnings
    assert small["adjusted"]["alarms"] == 0 and small["adjusted"]["warnings"] == 0
    assert large["preset"]["alarms"] == large["adjusted"]["alarms"] == 0
    crowd = results["detection"]["crowd"]["300"]["adjusted"]
    assert crowd["alarms"] == 1 and crowd["recall"] == 1.0
    assert [v["status"] for v in results["verdicts"]] == ["PASS", "PASS", "PASS"]
    print_results(results)
    assert "False alarms of the dataset-drift decision" in capsys.readouterr().out


def test_the_zipf_world_has_rare_and_absent_levels() -> None:
    frame = generate_zipf(300, seed=1)
    assert list(frame.columns[: len(ZIPF_CATEGORICAL)]) == list(ZIPF_CATEGORICAL)
    assert frame["occupation"].nunique() < 150  # most of the 200 levels are absent from a 300-row sample
    assert upper_bound(0, 100) == pytest.approx(0.0295, abs=1e-3) and upper_bound(3, 3) == 1.0
