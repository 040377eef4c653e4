"""The scaling benchmark's check: which passes grew faster than n log n when the graph doubled
(figures given, nothing timed here)."""

from __future__ import annotations

import pytest

from benchmarks import pipeline_scaling as scaling


def test_n_log_n_growth_of_a_doubling() -> None:
    assert scaling.nlogn_growth(25_000) == pytest.approx(2 * 10.8198 / 10.1266, rel=1e-4)
    assert 2.0 < scaling.nlogn_growth(100_000) < scaling.nlogn_growth(1_000)


def test_a_quadratic_pass_fails_the_check_and_a_linear_one_passes() -> None:
    medians = {25_000: {"total": 10.0, "linear": 1.0, "quadratic": 1.0, "tiny": 0.01},
               50_000: {"total": 21.0, "linear": 2.1, "quadratic": 4.0, "tiny": 0.1}}
    failures = scaling.growth_failures(medians)
    assert failures == ["quadratic: 1.00 s at 25,000 nodes, 4.00 s at 50,000 (4.00x, limit "
                        f"{scaling.nlogn_growth(25_000) * scaling.NOISE:.2f}x)"]


def test_growth_per_doubling_is_exact_for_a_power_law_and_weighs_every_size() -> None:
    linear = {n: 3e-5 * n for n in (25_000, 50_000, 100_000, 200_000)}
    assert scaling.growth_per_doubling(linear) == pytest.approx(2.0)
    quadratic = {n: 1e-9 * n * n for n in (1000, 2000, 4000)}
    assert scaling.growth_per_doubling(quadratic) == pytest.approx(4.0)
    # one slow run at one size moves the fit less than the ratio it falls in
    bumped = {**linear, 50_000: linear[50_000] * 0.92}
    assert bumped[100_000] / bumped[50_000] > 2.1
    assert 2.0 < scaling.growth_per_doubling(bumped) < 2.05
    assert scaling.growth_per_doubling({1000: 1.0}) is None


def test_the_whole_pipeline_is_held_to_its_growth_and_its_100k_target() -> None:
    assert scaling.pipeline_failures({1000: 1.0, 2000: 2.0, 4000: 4.1}) == []
    assert scaling.pipeline_failures({1000: 1.0, 2000: 2.5, 4000: 5.5}) == [
        f"the pipeline grows {scaling.growth_per_doubling({1000: 1.0, 2000: 2.5, 4000: 5.5}):.2f}x "
        f"per doubling of the graph over 1,000 to 4,000 nodes (limit {scaling.DOUBLING_LIMIT}x)"]
    assert scaling.pipeline_failures({50_000: 8.0, 100_000: 16.0}) == [
        "the pipeline takes 16.00 s at 100,000 nodes (target 15 s)"]
    # the pass check leaves the total to the pipeline's own
    assert scaling.growth_failures({1000: {"total": 1.0}, 2000: {"total": 2.5}}) == []


def test_sizes_without_their_double_are_not_compared() -> None:
    assert scaling.growth_failures({25_000: {"total": 1.0, "p": 1.0},
                                    75_000: {"total": 9.0, "p": 9.0}}) == []


def test_a_timed_run_happens_in_a_fresh_process_and_reports_its_figures() -> None:
    figures = scaling.time_in_child(200)
    assert (figures["before"], figures["after"]) == (200, 100)
    assert figures["seconds"] > 0 and figures["peak_rss_mib"] > 10
    assert "conv-bias-activation-fusion" in figures["passes"]
    assert figures["skipped"]["transpose-cancellation{fold-matmul-weights=false}"] == \
        "no Transpose in the graph"


def test_a_failed_child_run_is_one_error_naming_the_size() -> None:
    with pytest.raises(RuntimeError, match="timed run of -3 nodes failed"):
        scaling.time_in_child(-3)


def test_runs_of_one_size_give_minimum_median_and_largest_peak() -> None:
    runs = [{"seconds": s, "before": 20, "after": 10, "skipped": {"p": "why"},
             "passes": {"a": s / 2, "b": 0.1 * i}, "collection": s / 10,
             "peak_rss_mib": 100.0 + i}
            for i, s in enumerate([3.0, 1.0, 2.0])]
    figures = scaling.summarize_runs(runs)
    assert figures["times"] == [3.0, 1.0, 2.0]
    assert figures["min"] == {"total": 1.0, "a": 0.5, "b": 0.0}
    assert figures["median"] == {"total": 2.0, "a": 1.0, "b": pytest.approx(0.1)}
    assert figures["peak_rss_mib"] == 102.0 and figures["skipped"] == {"p": "why"}
    assert figures["collection"] == pytest.approx(0.2)


def test_passes_the_manager_skips_are_timed_directly_and_must_leave_the_graph_alone() -> None:
    from benchmarks.synthetic import synthetic_graph

    _, before, after, per_pass, skipped = scaling.time_pipeline(lambda: synthetic_graph(200), 1)
    assert (before, after) == (200, 100)
    assert skipped["transpose-cancellation{fold-matmul-weights=false}"] == \
        "no Transpose in the graph"
    assert "transpose-cancellation" not in per_pass and "conv-bias-activation-fusion" in per_pass
    seconds = scaling.time_skipped_directly(synthetic_graph(200), sorted(skipped))
    assert sorted(seconds) == sorted({text.split("{")[0] for text in skipped})
    # dead-layer-elimination would remove the graph's Identity nodes: never a skip
    with pytest.raises(AssertionError, match="dead-layer-elimination changed a graph"):
        scaling.time_skipped_directly(synthetic_graph(200), ["dead-layer-elimination"])
