"""The mutmut benchmark's targets and summary stay in step with the tree they describe."""

from __future__ import annotations

from pathlib import Path

from benchmarks import mutmut_run

REPO = Path(__file__).resolve().parent.parent


def test_every_registered_pass_is_a_target() -> None:
    import passes

    registered = {cls.__module__.split(".")[1] for cls in passes.BUILTIN_PASSES}
    assert registered - set(mutmut_run.targets()) == set()


def test_each_target_mutates_files_and_selects_tests_that_exist() -> None:
    for name, target in mutmut_run.targets().items():
        for pattern in target.files:
            assert list(REPO.glob(pattern)), f"{name}: {pattern} matches no file"
        paths = [arg for arg in target.tests if not arg.startswith("-") and "/" in arg]
        assert paths, name
        for path in paths:
            assert (REPO / path).exists(), f"{name}: {path}"


def test_a_pass_is_judged_by_its_own_tests_and_properties() -> None:
    target = mutmut_run.targets()["horizontal_fusion"]
    assert target.files == ("passes/horizontal_fusion/*",)
    assert target.tests == ("tests/passes/horizontal_fusion", "tests/test_pass_cases.py",
                            "tests/property/test_pass_semantics.py",
                            "-k", "horizontal_fusion or horizontal-fusion")
    config = mutmut_run._setup_cfg(target)
    assert "only_mutate =\n    passes/horizontal_fusion/*\n" in config
    assert "    -k\n    horizontal_fusion or horizontal-fusion\n" in config


def test_equivalent_entries_name_modules_that_are_targets() -> None:
    known = set(mutmut_run.targets())
    for name, (changed, reason) in mutmut_run.EQUIVALENT.items():
        package, module = name.split(".")[:2]
        if package == "passes":
            assert module in known, name
        assert changed and reason, name


def test_summary_counts_equivalent_survivors_apart(monkeypatch) -> None:
    monkeypatch.setattr(mutmut_run, "EQUIVALENT", {"passes.p.x_f__mutmut_3": ("+ x", "why")})
    stored = {"p": {"total": 5, "seconds": 120, "sample": None, "seed": None, "verdicts": {
        "passes.p.x_f__mutmut_1": {"status": "killed"},
        "passes.p.x_f__mutmut_2": {"status": "killed"},
        "passes.p.x_f__mutmut_3": {"status": "survived", "diff": "- y\n+ x"},
        "passes.p.x_f__mutmut_4": {"status": "survived", "diff": "- a\n+ b"},
        "passes.p.x_f__mutmut_5": {"status": "timeout"},
    }}}
    text = mutmut_run.summary_markdown(stored)
    assert "| p | 5 | 2 | 1 | 1 | 1 | 50% | 2 |" in text
    assert "non-equivalent mutants of `passes/` killed: 2 of 4 (50.0%)" in text
    assert "- `p.x_f__mutmut_3`: why" in text
    assert "- `p.x_f__mutmut_4`: `+ b`" in text
    assert mutmut_run.stale_equivalents(stored) == []
    stored["p"]["verdicts"]["passes.p.x_f__mutmut_3"]["diff"] = "- y\n+ z"
    assert mutmut_run.stale_equivalents(stored) == ["passes.p.x_f__mutmut_3"]


def test_verify_is_judged_by_its_tests_and_the_verify_instrument_s() -> None:
    target = mutmut_run.targets()["verify"]
    assert target.tests == ("tests/test_verify_reports.py", "tests/test_verify_tolerance.py",
                            "tests/test_parity_judges_right.py",
                            "tests/test_pass_manager.py", "-k", "verify or parity or distribution")
