"""Mutants nobody chose: run mutmut over the passes, the parity rule and the calibration package.

The hand list in benchmarks/mutation_check.py breaks the rules someone thought of; this script lets
a mutation-testing tool (mutmut 3) generate every mutant of a module (operators, constants,
arguments, strings, ``None`` for values) and runs, against each, only the tests that can reach it:

* a pass ``passes/<module>.py`` (or the package ``passes/<module>/``): its pass cases and own tests
  (``tests/passes/<module>/``), ``tests/test_pass_cases.py -k <module>`` and the property tests of
  the pass alone (``tests/property/test_pass_semantics.py -k <pass-name>``);
* ``trtcompile/verify.py``: ``tests/test_verify*.py``, ``tests/test_parity_judges_right.py`` and the
  verify instrument's tests in ``tests/test_pass_manager.py`` (``-k "verify or parity or
  distribution"``, which keeps every test of the first two files by their module names);
* ``trtcompile/calibration/``: ``tests/test_calibration.py`` and ``tests/passes/quantize_int8/``.

mutmut narrows this further: a mutant runs only the selected tests that executed its function in
the unmutated run. Each module gets its own scratch copy of the repository's tracked files under
the system temporary folder, with a ``[mutmut]`` section in a ``setup.cfg`` written there (the
project's pyproject.toml stays free of tool configuration); mutmut's ``mutants/`` folder lives in
that copy, so the working tree is never touched.

    python -m benchmarks.mutmut_run                                  # every module, full sets
    python -m benchmarks.mutmut_run --modules fold_constants,verify  # some modules
    python -m benchmarks.mutmut_run --modules verify --sample 100 --seed 1
    python -m benchmarks.mutmut_run --modules dead_layer_elimination --mutants NAME,...  # rerun some
    python -m benchmarks.mutmut_run --list
    python -m benchmarks.mutmut_run --report-only  # docs/testing.md from the stored results

Results are kept per module in benchmarks/mutmut_results.json (a rerun of some mutants updates
their verdicts only); the section ``mutmut`` of docs/testing.md is regenerated from that file on
every run (benchmarks/markdown_section.py). Survivors judged equivalent are listed in
:data:`EQUIVALENT` with the reason; every other survivor is a real gap in the tests. A benchmark,
not part of CI: the full set takes hours on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.markdown_section import write_section  # noqa: E402
from benchmarks.mutation_check import tracked_copy  # noqa: E402

RESULTS = REPO / "benchmarks" / "mutmut_results.json"
TESTING_MD = REPO / "docs" / "testing.md"
#: Examples per property test in the runs (the ``ci`` profile, derandomized, fewer examples).
PROPERTY_EXAMPLES = 30
#: The modules with the most rules first: the order a time-boxed run goes in.
PRIORITY = ("conv_bias_activation_fusion", "fold_constants", "concat_elimination",
            "horizontal_fusion", "global_pool_window", "flatten_gemm_conv",
            "dead_layer_elimination", "common_subexpression_elimination", "verify", "calibration")


@dataclass(frozen=True)
class Target:
    """One mutated module: the files mutmut mutates and the pytest selection judging them."""

    name: str
    files: tuple[str, ...]  # globs relative to the repository (mutmut's ``only_mutate``)
    tests: tuple[str, ...]  # pytest arguments selecting the tests a mutant can reach

    @property
    def is_pass(self) -> bool:
        return self.files[0].startswith("passes/")


def pass_target(module: str) -> Target:
    """The target of the pass ``passes/<module>.py`` or ``passes/<module>/``."""
    files = (f"passes/{module}/*",) if (REPO / "passes" / module).is_dir() else (f"passes/{module}.py",)
    pass_name = module.replace("_", "-")
    return Target(module, files, (f"tests/passes/{module}", "tests/test_pass_cases.py",
                                  "tests/property/test_pass_semantics.py",
                                  "-k", f"{module} or {pass_name}"))


def targets() -> dict[str, Target]:
    """Every mutable module by name: each pass, ``verify`` and ``calibration``."""
    modules = sorted(p.stem if p.suffix == ".py" else p.name for p in (REPO / "passes").iterdir()
                     if (p.suffix == ".py" and p.stem != "__init__")
                     or (p.is_dir() and (p / "__init__.py").exists()))
    found = {m: pass_target(m) for m in modules}
    verify_tests = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_verify*.py"))
    verify_tests += ["tests/test_parity_judges_right.py", "tests/test_pass_manager.py",
                     "-k", "verify or parity or distribution"]
    found["verify"] = Target("verify", ("trtcompile/verify.py",), tuple(verify_tests))
    found["calibration"] = Target("calibration", ("trtcompile/calibration/*",),
                                  ("tests/test_calibration.py", "tests/passes/quantize_int8"))
    return found


#: Survivors that no test can kill, by mutant name, with the reason. mutmut numbers a function's
#: mutants in source order, so an edit of a function renumbers them: the entry's ``changed`` text
#: (the mutated line) is checked against the mutant's diff and a stale entry is reported.
_CBAF = "passes.conv_bias_activation_fusion.x\u01c1ConvBiasActivationFusion\u01c1"
_FOLD = "passes.fold_constants.x\u01c1FoldConstants\u01c1"
_CE = "passes.concat_elimination.x\u01c1ConcatElimination\u01c1"
_HF = "passes.horizontal_fusion.x\u01c1HorizontalFusion\u01c1"
_GPW = "passes.global_pool_window.x\u01c1GlobalPoolWindow\u01c1"
_DLE = "passes.dead_layer_elimination.x\u01c1DeadLayerElimination\u01c1"
_CSE = "passes.common_subexpression_elimination.x\u01c1CommonSubexpressionElimination\u01c1"
_CSE_F = "passes.common_subexpression_elimination.x_"
_CSE_TAG = ("a token's tag only keeps kinds of attribute or input apart; the changed tag is still "
            "unlike every other")
_CLEANUP_DEFAULTS = ("onnx-graphsurgeon's Graph.cleanup defaults are remove_unused_node_outputs=False, "
                     "recurse_subgraphs=True, remove_unused_graph_inputs=False; None is as false")
_ALL_LIVE_SHORTCUT = ("_all_live only lets run skip a cleanup that would find nothing; this mutant makes "
                      "it answer False more often (a cleanup that removes nothing), never True wrongly")
EQUIVALENT: dict[str, tuple[str, str]] = {
    _DLE + "run__mutmut_62": ("if bypassed and self._all_live(graph)",
                              "the shortcut is skipped when nothing was bypassed (cleanup runs and "
                              "finds nothing) and taken after a bypass only when every layer is live"),
    _DLE + "run__mutmut_79": ("remove_unused_node_outputs=None", _CLEANUP_DEFAULTS),
    _DLE + "run__mutmut_81": ("remove_unused_graph_inputs=None", _CLEANUP_DEFAULTS),
    _DLE + "run__mutmut_82": ("+    graph.cleanup(recurse_subgraphs=True,", _CLEANUP_DEFAULTS),
    _DLE + "run__mutmut_83": ("remove_unused_node_outputs=False, remove_unused_graph_inputs=False)",
                              _CLEANUP_DEFAULTS),
    _DLE + "run__mutmut_84": ("+                  )", _CLEANUP_DEFAULTS),
    **{_DLE + f"_all_live__mutmut_{n}": (changed, _ALL_LIVE_SHORTCUT) for n, changed in (
        (3, "stack = None"), (5, "if id(None) not in live"), (6, "if id(node) in live:"),
        (7, "live.add(None)"), (8, "live.add(id(None))"), (11, "if id(None) not in live or"),
        (15, "+    return False"))},
    **{_DLE + f"_is_inference_dropout__mutmut_{n}": (
        changed, "training_mode is a scalar (one element): reshape(1) and reshape(-2) read the "
                 "same element as reshape(-1)") for n, changed in (
        (32, "reshape(+1)"), (33, "reshape(-2)"))},
    _CBAF + "_conv_problem__mutmut_10": (
        "WEIGHTS ARE NOT CONSTANT", "matching rejects a conv with non-constant weights first, with "
        "its own message; check and the rival-conv test only ask about convs with constant weights"),
    _CBAF + "_batchnorm__mutmut_18": (
        "if opset < 10 and", "BatchNormalization-9 has no spatial attribute: the default 1 keeps the "
        "check false at opset 9 as below it"),
    _CBAF + "rewrite__mutmut_98": (
        'conv.name or "CONV"', "the graph importer names every unnamed node, so the fallback prefix "
        "is never used"),
    _FOLD + "_fold_large_weights__mutmut_117": (
        "flatten_subgraphs=False, recurse_functions=False)",
        "size_threshold=None is Graph.fold_constants' default"),
    _FOLD + "_fold_whole_graph__mutmut_31": (
        "recurse_functions=None)", "Graph.fold_constants tests recurse_functions for truth: None is "
        "as False"),
    _FOLD + "_fold_whole_graph__mutmut_42": ("remove_unused_graph_inputs=None", _CLEANUP_DEFAULTS),
    "passes.fold_constants.x__infer_shapes__mutmut_3": (
        "XXfold-constants: model above 2 GiB", "the text of a log line for models above 2 GiB"),
    **{_CE + name: (changed, "ONNX requires Concat's axis attribute: the default is never read")
       for name, changed in (("run__mutmut_58", 'get("axis", 1)'),
                             ("_flatten__mutmut_27", 'get("axis", None)'),
                             ("_flatten__mutmut_32", 'get("axis", 1)'),
                             ("_split_of_concat__mutmut_35", 'concat.attrs.get("axis", None)'))},
    **{f"passes.concat_elimination.x__piece__mutmut_{n}": (
        changed, "starts and ends were checked to hold one element: reshape(-2) and reshape(1) read "
                 "the same element as reshape(-1)") for n, changed in (
        (146, "starts.reshape(-2)"), (150, "ends.reshape(+1)"))},
    **{f"passes.fold_constants.x__split_ranged_shape__mutmut_{n}": (
        changed, "a Shape is split only when its range is static, so the Slice and these constants "
                 "fold away: their names never reach the graph") for n, changed in (
        (60, 'constant("XXstartsXX"'), (62, "constant(None, end)"), (67, 'constant("ENDS"'))},
    "passes.fold_constants.x__infer_shapes__mutmut_7": (
        "+    return True", "after failed shape inference, True only makes run scan the unchanged "
                          "graph again"),
    "passes.horizontal_fusion.branches.x\u01c1_Reachability\u01c1__init____mutmut_3": (
        "self._index: dict[int, int] = None", "the index is rebuilt with the dataflow graph on "
        "first use, before it is read"),
    "passes.horizontal_fusion.branches.x__conv__mutmut_8": (
        'node.attrs.get("XXkernel_shapeXX")', "without the attribute the kernel is read from the "
        "weights' shape, which ONNX requires kernel_shape to equal"),
    "passes.horizontal_fusion.branches.x__gemm__mutmut_78": (
        '("gemm", *described.values())', "the key's first element only tells Gemms from the other "
        "families, and no other family is called gemm"),
    **{_GPW + f"rewrite__mutmut_{n}": (changed, "an intermediate's dtype is only declared in "
        "value_info (the importer leaves it unset); ONNX Runtime and TensorRT infer it from the "
        "pool") for n, changed in ((27, "dtype=None)"), (29, '_window"), )'))},
    _GPW + "check__mutmut_57": ("_non_linear_reader(None,", "_non_linear_reader does not read "
                                                           "its graph argument"),
    "passes.flatten_gemm_conv.x\u01c1FlattenGemmConv\u01c1rewrite__mutmut_10": (
        "dtype=None)", "an intermediate's dtype is only declared in value_info (the importer leaves "
        "it unset); ONNX Runtime and TensorRT infer it from the conv"),
    "passes.concat_elimination.x__piece__mutmut_118": (
        "axes.reshape(None)", "Slice's axes input is 1-D; reshape(None) leaves it as it is, so [0] "
        "reads the same element"),
    _CE + "_join__mutmut_56": (
        "np.array([value], ))", "numpy's default integer here is int64, the dtype spelled out (and "
        "Slice takes int32 or int64 either way)"),
    _HF + "run__mutmut_101": (
        "members[1].family", "the members of a merge share one key, which starts with their family"),
    _HF + "_legal_subsets__mutmut_11": (
        "members[1].described.get(\"group\"", "the members of a merge share one key, which holds "
        "the group; a merge has at least two members"),
    _HF + "_merged_conv_inputs__mutmut_40": (
        "bias.values.reshape(-2)", "numpy takes any negative size as the one to infer: reshape(-2) "
        "is reshape(-1)"),
    _CSE_F + "_deterministic_function__mutmut_4": (
        "memo[key] = None", "the caller tests the verdict with not, and None is as false"),
    **{_CSE_F + f"_digest__mutmut_{n}": (changed, reason) for n, changed, reason in (
        (18, '.cast("b")', "hashlib reads the buffer's bytes whatever their sign"),
        (7, "encode(), ).digest()", "a longer digest of the same text tells apart the same "
                                   "values"))},
    **{_CSE_F + f"_prefix__mutmut_{n}": (changed, reason) for n, changed, reason in (
        (14, ".tobytes()[:65]", "the prefix is only compared between constants of one dtype and "
                                "shape; a byte more tells apart only constants that differ"),
        (12, "reshape(-2)", "numpy takes any negative size as the one to infer"))},
    _CSE_F + "_random_reason__mutmut_35": (
        "reshape(-2)", "numpy takes any negative size as the one to infer"),
    _CSE_F + "_same_bytes__mutmut_1": (
        "a.dtype != b.dtype and a.shape", "constants are grouped by dtype and shape before they are "
                                          "compared: _same_bytes never sees two that differ in "
                                          "either"),
    "passes.common_subexpression_elimination.x\u01c1_Constants\u01c1token__mutmut_17": (
        '("XXcXX", len', "a constant's token tag only keeps constants apart from variables; the "
                         "changed tag is still unlike the others"),
    "passes.common_subexpression_elimination.x\u01c1_Group\u01c1_hash__mutmut_1": (
        "id(None) not in", "each member is then indexed again on every lookup: the lists hold "
                           "duplicates, the same constants match"),
    _CSE + "_merge_once__mutmut_117": (
        "reason = None", "the kept node equals the candidate in op, domain, attributes and inputs, "
                         "so its check gives the candidate's answer"),
    **{_CSE + f"_merge_once__mutmut_{n}": (changed, _CSE_TAG) for n, changed in (
        (6, '("XXeXX", 0)'), (20, '("F", struct'), (31, '("B", value)'),
        (38, '("XXlXX", tuple'), (52, '("P", type'), (97, '("C",)'))},
    **{_CSE_F + f"_deterministic_function__mutmut_{n}": (changed, reason) for n, changed, reason in (
        (31, "verdict = None", "the caller tests the verdict with not, and None is as false"),
        (33, "+            return", "the memo already holds False for the function, and the "
                                    "caller tests None as false"))},
    _CSE_F + "_dtype_key__mutmut_2": (
        "return repr(None)", "only dtypes numpy cannot name reach it: they share a group, and "
        "_same_bytes still compares dtypes before bytes"),
    _CSE_F + "_random_reason__mutmut_13": (
        'get("is_test", 2)', "any default but 0 leaves a Dropout without is_test in inference"),
    _CSE_F + "_same_bytes__mutmut_4": (
        "+        return True", "constants are grouped by dtype and shape before they are compared: "
                               "_same_bytes never sees two that differ in either"),
    _CSE + "_difference__mutmut_15": (
        "differing.append(None)", "unreachable: a node with an attribute that cannot be keyed is "
        "skipped before it can be a near miss"),
    **{_CSE + f"_merge_once__mutmut_{n}": (changed, _CSE_TAG) for n, changed in (
        (8, '("e", 1)'), (28, '("XXsXX", value)'), (29, '("S", value)'),
        (33, '("T", constants'), (35, '("XXaXX"'), (42, '("XXgXX",)'), (96, '("XXcXX",)'))},
    **{_CSE + f"_merge_once__mutmut_{n}": (
        changed, "the exception's message is never read: a node with an attribute that cannot be "
                 "keyed is skipped") for n, changed in (
        (54, "_Unkeyable(None)"), (55, "type(None).__name__"))},
    _CSE + "_merge_once__mutmut_73": (
        "tuple(t.is_empty() for", "the presence flags inverted tell the same outputs apart"),
    "passes.fold_constants.x__makes_non_tensor__mutmut_11": (
        'getattr(t, "type", )', "a folded tensor leaves its producer's outputs, so a node's "
        "outputs are onnx-graphsurgeon Variables, which always have a type"),
    _FOLD + "_fold_large_weights__mutmut_15": (
        'node.op == "constant"', "a Constant node has no inputs: the next test skips it"),
    _FOLD + "_fold_large_weights__mutmut_105": (
        "evaluates=False)", "only _fold_islands reads evaluates"),
    _FOLD + "_fold_large_weights__mutmut_107": (
        "fold_shapes=None,", "every chosen node computes from constants only: there is no Shape "
        "of a run-time tensor to fold"),
    _FOLD + "_fold_large_weights__mutmut_137": (
        "flatten_subgraphs=True,", "nodes holding subgraphs are never chosen: there is no If to "
        "flatten"),
    **{_FOLD + f"_fold_large_weights__mutmut_{n}": (
        changed, "only ONNX ops are chosen (checked above) and their opset is passed apart") for
       n, changed in ((123, "import_domains=None,"),
                      (134, "subgraph.import_domains and graph.import_domains"))},
    "passes.horizontal_fusion.branches.x__conv_call__mutmut_23": (
        "int(info.weights.shape[0]), None, info.residual)", "dynamic_inputs is only tested for "
        "truth, and None is as false as []"),
    "passes.horizontal_fusion.branches.x__gemm__mutmut_81": (
        "channels if (isinstance(channels, int)) or True", "weights with a symbolic dimension are "
        "not a constant: the Gemm is rejected as dynamic before its channels are read"),
    "passes.horizontal_fusion.branches.x__matmul__mutmut_19": (
        '("MatMul",), None,', "every MatMul has the key ('MatMul',): one is never unmatched beside "
        "another, so its described attributes are never shown"),
    "passes.horizontal_fusion.padded_kernels.x__padding_key__mutmut_36": (
        '("XXConvXX",)', "the kind only tells plain Convs from fused calls, whose key starts with "
        "'call'"),
    _HF + "run__mutmut_44": (
        "_padding_candidates(unmatched, None,", "the siblings queued with a padded subset are never "
        "read"),
    "passes.concat_elimination.x__dim__mutmut_5": (
        "axis > len(shape)", "the axis was made non-negative against the rank of tensors of the "
        "same Concat, Split or Slice, so it is below the rank of the tensor read"),
    "passes.concat_elimination.x__piece__mutmut_113": (
        "else 0, tensor)", "without the data input, the rank is read through the Slice output's "
        "producer, the Slice, from the same data input"),
    "passes.concat_elimination.x__piece__mutmut_186": (
        "stop = None", "a range ending at a known dim and one running to the end hold the same "
        "elements, whether they are joined or written as a Slice's end"),
    "passes.concat_elimination.x__split_sizes__mutmut_57": (
        "(dim % count == 0) or True", "a Split without sizes must divide its axis before opset 18, "
        "and from 18 has num_outputs: the uneven case is not valid ONNX"),
    _CE + "_split_of_concat__mutmut_60": (
        "None in concat_sizes and sizes is None", "sizes != concat_sizes already holds when either "
        "is unknown: a list of ints never equals one holding None, nor None a list"),
    _CE + "run__mutmut_18": (
        "removed_any &=", "a pair removed by rule 5 is counted, so the cleanup runs on "
        "result.counts all the same"),
    _CE + "run__mutmut_138": ("graph.cleanup(remove_unused_graph_inputs=False)",
                              _CLEANUP_DEFAULTS),
    **{f"passes.flatten_gemm_conv.x__kernel__mutmut_{n}": (changed, reason) for n, changed, reason in (
        (82, "dtype=None)", "ONNX gives a Gemm's C the element type of B, so the bias already has "
                            "the matrix's dtype"),
        (92, "c.reshape(-2)", "numpy takes any negative size as the one to infer"))},
    "passes.flatten_gemm_conv.x\u01c1FlattenGemmConv\u01c1_flattens_map__mutmut_39": (
        "(len(flat.inputs) > 1) or True", "ONNX requires Reshape's shape input"),
    "passes.flatten_gemm_conv.x\u01c1FlattenGemmConv\u01c1_flattens_map__mutmut_56": (
        "(not int(flat.attrs.get(\"allowzero\", 0))) or True", "with allowzero=1 a 0 in the "
        "target asks for a zero-size dimension, which a map of known positive dimensions cannot "
        "take: such a model does not run"),
    _GPW + "_mean_form__mutmut_41": ("reshape(-2)", "numpy takes any negative size as the one to "
                                                    "infer"),
    **{f"trtcompile.verify.x_feed_data__mutmut_{n}": (
        changed, "only the first batch is read: Polygraphy's DataLoader draws it the same with "
                 "one iteration (its default) or more") for n, changed in (
        (6, "iterations=None,"), (9, "DataLoader(seed=seed, input_metadata"), (11, "iterations=2,"))},
    "trtcompile.verify.x_within_tolerance__mutmut_15": ("reference.astype(None)",
                                                        "numpy's astype(None) is float64"),
    "trtcompile.verify.x_error_statistics__mutmut_9": ("candidate.astype(None)",
                                                       "numpy's astype(None) is float64"),
    "trtcompile.verify.x_within_tolerance__mutmut_8": (
        'reference.dtype.kind == "B"', "outputs of different element types are reported as "
        "changed before the rule applies: a boolean reference meets a boolean candidate, which "
        "the second test sees"),
    "trtcompile.verify.x__changed_outputs__mutmut_6": (
        "reference is None and candidate is None", "compare_run_results, the only caller, raises "
        "first when either runner is absent"),
    "trtcompile.calibration.cache.x_model_fingerprint__mutmut_5": (
        "SerializeToString(deterministic=None)", "deterministic serialization only orders map "
        "fields, and ONNX's GraphProto has none"),
    "trtcompile.calibration.data.x__release_pages__mutmut_8": (
        'getattr(array, "_MMAP", None)', "dropping a memory map's resident pages only returns "
        "memory to the system: the values read are the same"),
    "trtcompile.calibration.ranges.x\u01c1AbsHistogram\u01c1_grow__mutmut_17": (
        "if factor > self.num_bins:", "with the factor equal to the number of bins, the grouping "
        "branch also puts every count into bin 0"),
    "trtcompile.calibration.ranges.x\u01c1AbsHistogram\u01c1_grow__mutmut_42": (
        "self.num_bins % factor == 1 else", "np.add.reduceat from every factor-th bin sums the "
        "same groups as the reshape"),
    _FOLD + "_fold_islands__mutmut_49": (
        "part.fold_constants(recurse_subgraphs=False,", "with fold_shapes off no Shape of a "
        "run-time tensor enters an island: its nodes read constants only, so onnx-graphsurgeon's "
        "default fold_shapes=True finds no shape to fold"),
    _FOLD + "_reject__mutmut_15": (
        "next(iter(node.attrs), None)", "ONNX requires a Constant to have an attribute: the "
        "default never shows"),
}


def _setup_cfg(target: Target) -> str:
    """The ``[mutmut]`` section for ``target`` (setup.cfg list syntax: one value a line)."""
    def listed(key: str, values: tuple[str, ...] | list[str]) -> str:
        return f"{key} =\n" + "".join(f"    {v}\n" for v in values)
    # Both packages are copied to mutants/ (mutmut takes the copy's root off sys.path), only the
    # target's files are mutated.
    return ("[mutmut]\n" + listed("source_paths", ["passes", "trtcompile"])
            + listed("only_mutate", target.files)
            + listed("pytest_add_cli_args_test_selection", target.tests)
            + listed("pytest_add_cli_args", ["-p", "no:cacheprovider"]))


def _environment(tree: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(tree), TRTCOMPILE_PROPERTY_PROFILE="ci",
                TRTCOMPILE_PROPERTY_EXAMPLES=str(PROPERTY_EXAMPLES),
                TRTCOMPILE_PROPERTY_FAILURES=str(tree / "property-failures"),
                TF_CPP_MIN_LOG_LEVEL="2")


_GENERATE = """
from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, set_mutant_under_test
set_mutant_under_test("mutant_generation")
copy_src_dir(); copy_also_copy_files(); create_mutants(2)
"""


def _meta(tree: Path) -> dict[str, dict]:
    """mutmut's record per mutated file (``mutants/<file>.meta``)."""
    return {str(p.relative_to(tree / "mutants"))[:-len(".meta")]: json.loads(p.read_text())
            for p in sorted((tree / "mutants").rglob("*.py.meta"))}


def mutant_names(tree: Path) -> list[str]:
    """Every mutant mutmut generated in ``tree``, in file and source order."""
    return [name for meta in _meta(tree).values() for name in meta["exit_code_by_key"]]


def _status(exit_code: int | None) -> str:
    from mutmut.stats import status_by_exit_code
    return status_by_exit_code[exit_code]


def _diff(tree: Path, name: str) -> str:
    """The changed lines of mutant ``name`` (``-`` original, ``+`` mutant)."""
    shown = subprocess.run(["mutmut", "show", name], cwd=tree, capture_output=True, text=True,
                           env=_environment(tree)).stdout
    return "\n".join(line for line in shown.splitlines()
                     if line[:1] in "+-" and not line.startswith(("+++", "---")))


def run_target(target: Target, sample: int | None, seed: int, rerun: list[str],
               max_children: int, keep: bool) -> dict:
    """Run mutmut for ``target`` in a scratch copy; its verdicts and the survivors' diffs."""
    tree = Path(tempfile.mkdtemp(prefix=f"mutmut-{target.name}-"))
    start = time.perf_counter()
    try:
        tracked_copy(tree)
        (tree / "setup.cfg").write_text(_setup_cfg(target))
        env = _environment(tree)
        chosen: list[str] = list(rerun)
        if sample and not rerun:
            subprocess.run([sys.executable, "-c", _GENERATE], cwd=tree, env=env, check=True,
                           capture_output=True)
            every = mutant_names(tree)
            chosen = sorted(random.Random(seed).sample(every, min(sample, len(every))))
        command = ["nice", "-n", "15", "mutmut", "run", "--max-children", str(max_children), *chosen]
        completed = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
        if completed.returncode != 0:
            tail = (completed.stdout + completed.stderr)[-2000:]
            raise SystemExit(f"mutmut failed on {target.name} (exit {completed.returncode}):\n{tail}")
        verdicts: dict[str, dict] = {}
        for meta in _meta(tree).values():
            for name, exit_code in meta["exit_code_by_key"].items():
                if chosen and name not in chosen:
                    continue
                status = _status(exit_code)
                verdicts[name] = {"status": status}
                if status in ("survived", "no tests"):
                    verdicts[name]["diff"] = _diff(tree, name)
        return {"verdicts": verdicts, "seconds": round(time.perf_counter() - start),
                "sample": sample if not rerun else None, "seed": seed if sample else None,
                "total": len(mutant_names(tree))}
    finally:
        if keep:
            print(f"kept {tree}")
        else:
            shutil.rmtree(tree, ignore_errors=True)


def _merge(stored: dict, name: str, run: dict, rerun: bool) -> None:
    if rerun and name in stored:
        stored[name]["verdicts"].update(run["verdicts"])
        stored[name]["rerun_seconds"] = stored[name].get("rerun_seconds", 0) + run["seconds"]
    else:
        stored[name] = run


def classify(name: str, verdict: dict) -> str:
    """``killed``, ``timeout``, ``equivalent`` or ``real`` (a survivor, or a mutant no test runs)."""
    status = verdict["status"]
    if status in ("killed", "caught by type check"):
        return "killed"
    if status == "timeout":
        return "timeout"
    if status in ("survived", "no tests") and name in EQUIVALENT:
        return "equivalent"
    return "real"


def stale_equivalents(stored: dict) -> list[str]:
    """Entries of :data:`EQUIVALENT` whose mutant's diff no longer shows the recorded change."""
    stale = []
    for module in stored.values():
        for name, verdict in module["verdicts"].items():
            if name in EQUIVALENT and "diff" in verdict and EQUIVALENT[name][0] not in verdict["diff"]:
                stale.append(name)
    return stale


def summary_markdown(stored: dict) -> str:
    """The ``mutmut`` section of docs/testing.md from the stored results."""
    rows, totals = [], {"passes": [0, 0, 0], "all": [0, 0, 0]}  # mutants, killed, equivalent
    for module in [m for m in PRIORITY if m in stored] + sorted(set(stored) - set(PRIORITY)):
        result = stored[module]
        kinds = [classify(n, v) for n, v in result["verdicts"].items()]
        count = {k: kinds.count(k) for k in ("killed", "timeout", "equivalent", "real")}
        non_equivalent = len(kinds) - count["equivalent"]
        rate = f"{100 * count['killed'] / non_equivalent:.0f}%" if non_equivalent else "-"
        sample = (f"{len(kinds)} of {result['total']} (seed {result['seed']})"
                  if result.get("sample") else f"{len(kinds)}")
        rows.append(f"| {module} | {sample} | {count['killed']} | {count['equivalent']} | "
                    f"{count['real']} | {count['timeout']} | {rate} | {result['seconds'] // 60} |")
        for key in ("all",) + (("passes",) if module not in ("verify", "calibration") else ()):
            totals[key][0] += len(kinds)
            totals[key][1] += count["killed"]
            totals[key][2] += count["equivalent"]

    def rate(key: str) -> str:
        mutants, killed, equivalent = totals[key]
        return (f"{killed} of {mutants - equivalent} ({100 * killed / max(1, mutants - equivalent):.1f}%)")

    lines = [
        f"Measured with mutmut {version('mutmut')} (`python -m benchmarks.mutmut_run`, two cores "
        f"shared with other work, `nice -n 15`, property tests at {PROPERTY_EXAMPLES} examples): "
        f"**non-equivalent mutants of `passes/` killed: {rate('passes')}**; of every module "
        f"measured: {rate('all')}. A timed-out mutant is not counted as killed. Wall time: "
        f"{sum(r['seconds'] for r in stored.values()) // 60} minutes for the runs, "
        f"{sum(r.get('rerun_seconds', 0) for r in stored.values()) // 60} for rerunning the "
        "survivors once tests were added (`--mutants`).",
        "",
        "| module | mutants | killed | survived, equivalent | survived, real | timed out | "
        "killed of non-equivalent | minutes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]
    equivalent = [(n, EQUIVALENT[n][1]) for r in stored.values() for n, v in r["verdicts"].items()
                  if classify(n, v) == "equivalent"]
    if equivalent:
        lines += ["", "Equivalent survivors (no test can tell them from the original):", ""]
        lines += [f"- `{n.split('.', 1)[1]}`: {reason}" for n, reason in equivalent]
    real = [(n, v["diff"]) for r in stored.values() for n, v in r["verdicts"].items()
            if classify(n, v) == "real"]
    if real:
        lines += ["", "Real survivors (tests still to write):", ""]
        for name, diff in real:
            changed = " / ".join(line.strip() for line in diff.splitlines() if line.startswith("+"))
            lines.append(f"- `{name.split('.', 1)[1]}`: `{changed[:120]}`")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default=",".join(PRIORITY),
                        help="comma-separated modules (pass module names, verify, calibration)")
    parser.add_argument("--sample", type=int, help="test this many mutants of each module")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--mutants", default="",
                        help="comma-separated mutant names to rerun (one module)")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    parser.add_argument("--list", action="store_true", help="list modules and their tests")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/testing.md")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: regenerate docs/testing.md from the stored results")
    args = parser.parse_args()
    known = targets()
    if args.report_only:
        stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        write_section("mutmut", summary_markdown(stored), TESTING_MD)
        return 0
    chosen = [m for m in args.modules.split(",") if m]
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise SystemExit(f"unknown modules {unknown}: expected some of {', '.join(known)}")
    if args.list:
        for name, target in known.items():
            print(f"{name:36} {' '.join(target.files)}  <-  {' '.join(target.tests)}")
        return 0
    rerun = [m for m in args.mutants.split(",") if m]
    if rerun and len(chosen) != 1:
        raise SystemExit("--mutants reruns mutants of one module: name it with --modules")
    for module in chosen:
        run = run_target(known[module], args.sample, args.seed, rerun, args.max_children, args.keep)
        # Read just before writing: runs of other modules may have finished in the meantime.
        stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        _merge(stored, module, run, bool(rerun))
        kinds = [classify(n, v) for n, v in run["verdicts"].items()]
        print(f"{module}: {len(kinds)} mutants, {kinds.count('killed')} killed, "
              f"{kinds.count('equivalent')} equivalent, {kinds.count('real')} survived, "
              f"{kinds.count('timeout')} timed out, {run['seconds']}s", flush=True)
        RESULTS.write_text(json.dumps(stored, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    stale = stale_equivalents(stored)
    if stale:
        print(f"stale equivalent entries (the mutant changed): {stale}")
    if not args.no_write:
        write_section("mutmut", summary_markdown(stored), TESTING_MD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
