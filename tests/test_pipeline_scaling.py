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


def test_the_whole_pipeline_is_held_to_its_own_limit() -> None:
    medians = {1000: {"total": 1.0}, 2000: {"total": 2.5}, 4000: {"total": 5.0}}
    assert scaling.growth_failures(medians) == [
        f"total: 1.00 s at 1,000 nodes, 2.50 s at 2,000 (2.50x, limit {scaling.DOUBLING_LIMIT:.2f}x)"]


def test_sizes_without_their_double_are_not_compared() -> None:
    assert scaling.growth_failures({25_000: {"total": 1.0, "p": 1.0},
                                    75_000: {"total": 9.0, "p": 9.0}}) == []


def test_peak_rss_is_read_from_time_v_output() -> None:
    text = ("\tUser time (seconds): 9.81\n\tMaximum resident set size (kbytes): 1536000\n"
            "\tExit status: 0\n")
    assert scaling.parse_peak_rss_mib(text) == 1500.0
    assert scaling.parse_peak_rss_mib("Command terminated by signal 9\n") is None


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
