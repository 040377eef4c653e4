"""Golden manifests: parsing and validation, the runner, `trtcompile golden` (table, JUnit XML,
exit codes, -k, --update) and the project's own manifest."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from tests.helpers import CONV_PIPELINE, GOLDEN, REPO, measured_layers, run_main, run_trtcompile
from trtcompile import golden
from trtcompile.errors import InputError

MANIFEST = GOLDEN / "manifest.toml"

#: Replaces every Relu by Identity: wrong only where the Relu input is negative.
RELU_TO_IDENTITY = '''
from dataclasses import dataclass
from typing import ClassVar

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class ReluToIdentity(Pass):
    """Turns every Relu into an Identity (changes results for negative inputs, on purpose)."""

    name: ClassVar[str] = "relu-to-identity"

    def run(self, graph, ctx):
        result = PassResult()
        for node in graph.nodes:
            if node.op == "Relu":
                node.op = "Identity"
                result.count("relus_removed")
        return result


@dataclass(frozen=True)
class Explode(Pass):
    """Raises: a compiler bug."""

    name: ClassVar[str] = "explode"

    def run(self, graph, ctx):
        raise RuntimeError("boom")
'''


def make_models():
    spec = importlib.util.spec_from_file_location("golden_make_models", GOLDEN / "make_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def suite(tmp_path: Path) -> Path:
    """A folder with copies of the small golden models and the pass module above."""
    for name in ("conv_branches.onnx", "nhwc_transposes.onnx", "nhwc_transposes.npz"):
        shutil.copy(GOLDEN / name, tmp_path / name)
    (tmp_path / "my_passes.py").write_text(RELU_TO_IDENTITY)
    return tmp_path


def write(folder: Path, text: str, name: str = "manifest.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    """``trtcompile golden --no-progress <args>`` in this process."""
    return run_main(["golden", "--no-progress", *args], capsys)


# --------------------------------------------------------------------------------------------
# The project's manifest and its models
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`trtcompile golden tests/golden/manifest.toml --junit ...`, one model after the other in
    one process: the run the worker and Ray runs are compared with."""
    junit = tmp_path_factory.mktemp("serial") / "golden.xml"
    result = run_trtcompile("golden", str(MANIFEST.relative_to(REPO)), "--junit", str(junit))
    return result, junit


def test_project_manifest_passes(serial_run) -> None:
    """`trtcompile golden tests/golden/manifest.toml` exits 0: every expected count and parity
    holds (after a pass changes counts, run it with --update and review the diff)."""
    result, junit = serial_run
    assert result.returncode == 0, result.stdout + result.stderr
    names = [entry.name for entry in golden.load_manifest(MANIFEST).entries]
    rows = result.stdout.splitlines()[1:1 + len(names)]
    assert [row.split()[0] for row in rows] == names
    assert all(row.rstrip().endswith("ok") for row in rows)
    assert "all passed" in result.stdout
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == str(len(names)) and suite.get("failures") == "0"
    assert [case.get("name") for case in suite.iter("testcase")] == names


def junit_without_times(path: Path) -> str:
    """A JUnit report with its ``time`` attributes removed (everything else must match)."""
    root = ElementTree.parse(path).getroot()
    for element in root.iter():
        element.attrib.pop("time", None)
    return ElementTree.tostring(root, encoding="unicode")


def table_without_times(stdout: str) -> list[list[str]]:
    """The result table's rows without the time column (the two words before the verdict)."""
    rows = [line.split() for line in stdout.splitlines()[1:] if line.strip()]
    return [row[:-3] + row[-1:] for row in rows if row[-1] in ("ok", "REGRESSED", "ERROR", "FAILED")]


@pytest.mark.slow
@pytest.mark.parametrize("flags", [("--workers", "2"), ("--ray", "local", "--workers", "2")],
                         ids=["workers", "ray-local"])
def test_project_manifest_parallel_runs_match_serial(serial_run, tmp_path: Path, flags) -> None:
    """Two worker processes, and a local Ray cluster of 2 CPUs (started for the run, stopped
    after), give the serial run's verdicts, table and JUnit report (times aside)."""
    if flags[0] == "--ray":
        pytest.importorskip("ray", reason="Ray is not installed (pip install -e \".[ray]\")")
    serial, serial_junit = serial_run
    assert serial.returncode == 0, serial.stdout + serial.stderr
    junit = tmp_path / "golden.xml"
    result = run_trtcompile("golden", str(MANIFEST.relative_to(REPO)), *flags, "--junit",
                            str(junit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert table_without_times(result.stdout) == table_without_times(serial.stdout)
    assert len(table_without_times(result.stdout)) == len(golden.load_manifest(MANIFEST).entries)
    assert result.stdout.splitlines()[-1] == serial.stdout.splitlines()[-1]
    assert junit_without_times(junit) == junit_without_times(serial_junit)


def test_project_manifest_covers_example_and_small_models() -> None:
    entries = golden.load_manifest(MANIFEST).entries
    # Both built-in examples, the default one lowered from TensorFlow, through to the engine.
    for example in ("googlenet-onnx", "googlenet-keras"):
        assert any(entry.example == example and entry.engine and not entry.expect.empty
                   for entry in entries), example
    small = [entry for entry in entries if entry.path is not None]
    assert len(small) >= 2
    for entry in small:
        assert entry.path.stat().st_size < 16_000, f"{entry.path.name} is not tiny"
        assert not entry.expect.empty
    assert any(entry.data is not None for entry in entries)


def test_committed_models_match_their_generator() -> None:
    built = make_models().build()
    for name, content in built.items():
        assert (GOLDEN / name).read_bytes() == content, \
            f"{name} differs from make_models.py's output: run python tests/golden/make_models.py"


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def test_manifest_parses_every_key(suite: Path) -> None:
    path = write(suite, f"""
        [[model]]
        name = "branches"
        path = "conv_branches.onnx"
        pipeline = "{CONV_PIPELINE}"
        precision = "fp16"
        input_shapes = {{ input = [1, 4, 8, 8] }}
        rtol = 0.5
        seed = 3
        engine = true
        pass_modules = ["my_passes.py"]
        [model.expect]
        layers = 3
        engine_compute_layers = 2
        passes = {{ "horizontal-fusion" = 5, "precision-fp16" = 3 }}

        [[model]]
        name = "example"
        path = "builtin:googlenet-onnx"
        data = "nhwc_transposes.npz"
        """)
    manifest = golden.load_manifest(path)
    first, second = manifest.entries
    assert first.path == suite / "conv_branches.onnx" and first.example is None
    assert first.pipeline == CONV_PIPELINE and first.precision == "fp16"
    assert first.input_shapes == {"input": (1, 4, 8, 8)}
    assert first.tolerances() == (1e-2, 0.5)  # atol: fp16's default; rtol as given
    assert (first.seed, first.engine, first.pass_modules) == (3, True, (suite / "my_passes.py",))
    assert first.expect == golden.Expectations(3, 2, {"horizontal-fusion": 5, "precision-fp16": 3})
    assert first.line == 1 and second.line == 16
    assert second.path is None and second.example == "googlenet-onnx"
    assert second.data == suite / "nhwc_transposes.npz"
    assert second.tolerances() == (1e-4, 1e-3) and second.expect.empty


BAD_MANIFESTS = [
    # (entry body, the key the message names, words of the problem)
    ('name = "m"\npath = "conv_branches.onnx"\natoll = 1e-4', "atoll", "did you mean 'atol'?"),
    ('path = "conv_branches.onnx"', "name", "missing (required)"),
    ('name = "m"', "path", "missing (required)"),
    ('name = "m"\npath = "models/absent.onnx"', "path", "'models/absent.onnx' not found"),
    ('name = "m"\npath = "conv_branches.onnx"\natol = "tight"', "atol",
     "expected a finite non-negative number (nan or inf would switch the check off), got "
     "string 'tight'"),
    ('name = "m"\npath = "conv_branches.onnx"\natol = inf', "atol", "got number inf"),
    ('name = "m"\npath = "conv_branches.onnx"\nrtol = nan', "rtol", "got number nan"),
    ('name = "m"\npath = "conv_branches.onnx"\nseed = 4294967296', "seed",
     "expected an integer from 0 to 4294967295, got integer 4294967296"),
    ('name = "m"\npath = "conv_branches.onnx"\nengine = "yes"', "engine", "expected true or false"),
    ('name = "m"\npath = "conv_branches.onnx"\ninput_shapes = { input = [1, 0, 8] }', "input_shapes",
     "input 'input': expected a list of positive integers"),
    ('name = "m"\npath = "builtin:alexnet"', "path", "unknown built-in example 'alexnet'"),
    ('name = "m"\npath = "conv_branches.onnx"\nprecision = "fp8"', "precision", "unknown precision 'fp8'"),
    ('name = "m"\npath = "conv_branches.onnx"\npipeline = "fold-constantz"', "pipeline",
     "unknown pass 'fold-constantz'"),
    ('name = "m"\npath = "conv_branches.onnx"\ndata = "my_passes.py"', "data", "is not a .npz file"),
    ('name = "m"\npath = "conv_branches.onnx"\n[model.expect]\nlayer = 3', "expect.layer",
     "did you mean 'layers'?"),
    ('name = "m"\npath = "conv_branches.onnx"\n[model.expect]\nlayers = 3.5', "expect.layers",
     "expected a non-negative integer, got number 3.5"),
    ('name = "m"\npath = "conv_branches.onnx"\n[model.expect]\nengine_compute_layers = 4',
     "expect.engine_compute_layers", "needs engine = true"),
    ('name = "m"\npath = "conv_branches.onnx"\npipeline = "fold-constants"\n[model.expect]\n'
     'passes = { "horizontal-fusion" = 3 }', "expect.passes",
     "pass 'horizontal-fusion' does not run in pipeline 'fold-constants'"),
    ('name = "m"\npath = "conv_branches.onnx"\nprecision = "int8"', "calib_data",
     "precision = \"int8\" needs calibration samples"),
]


@pytest.mark.parametrize("body,key,problem", BAD_MANIFESTS, ids=[b[1] + ":" + b[2][:24] for b in BAD_MANIFESTS])
def test_bad_entry_names_entry_key_and_line(suite: Path, body: str, key: str, problem: str) -> None:
    good = '[[model]]\nname = "first"\npath = "conv_branches.onnx"\n\n'
    path = write(suite, good + "[[model]]\n" + body + "\n")
    with pytest.raises(InputError) as caught:
        golden.load_manifest(path)
    message = str(caught.value)
    assert "\n" not in message
    entry = "model 'm'" if 'name = "m"' in body else "model #2"
    assert message.startswith(f"{path}:"), message
    line = int(message[len(str(path)) + 1:].split(":")[0])
    assert line >= 5, message  # the second entry's lines, not the first's
    assert f"{entry}, key '{key}'" in message and problem in message, message


def test_bad_entry_line_points_at_the_key(suite: Path) -> None:
    path = write(suite, """
        [[model]]
        name = "m"
        path = "conv_branches.onnx"   # fine
        rtol = -1
        """)
    with pytest.raises(InputError, match=rf"^{path}:4: model 'm', key 'rtol': expected a finite "
                                         r"non-negative number .*, got integer -1$"):
        golden.load_manifest(path)


def test_duplicate_names_are_refused(suite: Path) -> None:
    path = write(suite, """
        [[model]]
        name = "twin"
        path = "conv_branches.onnx"

        [[model]]
        name = "twin"
        path = "nhwc_transposes.onnx"
        """)
    with pytest.raises(InputError, match=r":6: model 'twin', key 'name': duplicate name "
                                         r"\(entry #1, line 1, has it too\)"):
        golden.load_manifest(path)


@pytest.mark.parametrize("text,problem", [
    ("[[model]]\nname = \n", "not valid TOML"),
    ("title = \"x\"\n", "unknown top-level key 'title'"),
    ("[model]\nname = \"m\"\n", "'model' must be an array of tables"),
    ("# nothing here\n", "no [[model]] entry"),
])
def test_bad_manifest_file(suite: Path, text: str, problem: str) -> None:
    path = write(suite, text)
    with pytest.raises(InputError, match=re_escape(problem)):
        golden.load_manifest(path)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_bad_manifest_exits_2_with_one_line(suite: Path, capsys) -> None:
    path = write(suite, '[[model]]\nname = "m"\npath = "gone.onnx"\n')
    code, out, err = run_cli(str(path), capsys=capsys)
    assert code == 2 and out == ""
    assert err.strip() == (f"trtcompile: error: {path}:3: model 'm', key 'path': 'gone.onnx' not "
                           f"found (resolved to {suite / 'gone.onnx'})")
    code, out, err = run_cli(str(suite / "absent.toml"), capsys=capsys)
    assert code == 2 and "manifest not found" in err


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def test_regression_fails_loudly_and_explains(suite: Path, capsys) -> None:
    layers, after = measured_layers()
    path = write(suite, f"""
        [[model]]
        name = "branches"
        path = "conv_branches.onnx"
        pipeline = "{CONV_PIPELINE}"
        [model.expect]
        layers = {layers + 2}
        passes = {{ "conv-bias-activation-fusion" = {after["conv-bias-activation-fusion"]}, "horizontal-fusion" = {after["horizontal-fusion"] + 1} }}

        [[model]]
        name = "transposes"
        path = "nhwc_transposes.onnx"
        """)
    junit = suite / "reports" / "golden.xml"
    (suite / "reports").mkdir()
    code, out, err = run_cli(str(path), "--junit", str(junit), capsys=capsys)
    assert code == 1
    header, branches_row, transposes_row = out.splitlines()[:3]
    assert header.split() == ["model", "layers", "engine", "layers", "passes", "parity", "max_abs",
                              "time", "result"]
    assert branches_row.startswith("branches") and branches_row.endswith("REGRESSED")
    assert f"{layers} (expected {layers + 2})" in branches_row
    assert transposes_row.endswith("ok")
    assert f"  layers: expected {layers + 2}, got {layers} (2 fewer)" in out
    assert (f"  passes.horizontal-fusion: expected {after['horizontal-fusion'] + 1}, got "
            f"{after['horizontal-fusion']} (1 fewer)") in out
    assert "passes.conv-bias-activation-fusion" not in out  # that one held
    assert "  layers after each pass: input 11, fold-constants 11, conv-bias-activation-fusion" in out
    assert "2 models: 1 passed, 1 failed (branches)" in out
    assert err.strip() == (f"trtcompile: error: 1 of 2 golden models failed: branches (layers: "
                           f"expected {layers + 2}, got {layers} (2 fewer))")

    root = ElementTree.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("2", "1", "0")
    cases = {case.get("name"): case for case in root.iter("testcase")}
    failure = cases["branches"].find("failure")
    assert failure.get("type") == "regressed"
    assert failure.get("message").startswith(f"layers: expected {layers + 2}, got {layers}")
    assert "layers after each pass" in failure.text
    assert cases["transposes"].find("failure") is None
    assert float(cases["branches"].get("time")) > 0


def test_parity_failure_and_pass_error(suite: Path, capsys) -> None:
    path = write(suite, """
        [[model]]
        name = "broken"
        path = "conv_branches.onnx"
        pipeline = "relu-to-identity"
        pass_modules = ["my_passes.py"]

        [[model]]
        name = "crashes"
        path = "conv_branches.onnx"
        pipeline = "explode"
        pass_modules = "my_passes.py"
        """)
    manifest = golden.load_manifest(path)
    broken, crashes = golden.run_manifest(manifest.entries, progress=False)
    assert broken.status == "PARITY FAILED" and not broken.passed
    assert broken.problems()[0].startswith("parity failed (atol=0.0001, rtol=0.001): optimized vs "
                                           "input: output 'output'")
    assert crashes.status == "ERROR" and crashes.layers is None
    assert "pass 'explode' failed: RuntimeError: boom" in crashes.problems()[0]
    assert golden.exit_code([broken, crashes]) == 1
    root = ElementTree.fromstring(golden.junit_xml([broken, crashes], "suite"))
    cases = list(root.iter("testcase"))
    assert cases[0].find("failure").get("type") == "parity failed"
    assert cases[1].find("error").get("type") == "PassFailed"
    assert root.get("failures") == "1" and root.get("errors") == "1"


def test_data_file_drives_parity(suite: Path) -> None:
    """relu-to-identity is wrong only for negative Relu inputs. With positive weights, the seeded
    signed inputs make some; a data file of positive inputs (a known input range) makes none."""
    import onnx

    from trtcompile import ir

    model = onnx.load(suite / "nhwc_transposes.onnx")
    for init in model.graph.initializer:
        values = np.abs(onnx.numpy_helper.to_array(init))
        init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    ir.save(model, suite / "positive.onnx")
    np.savez(suite / "positive.npz", input=np.full((1, 6, 6, 3), 0.5, np.float32))
    path = write(suite, """
        [[model]]
        name = "random-inputs"
        path = "positive.onnx"
        pipeline = "relu-to-identity"
        pass_modules = ["my_passes.py"]

        [[model]]
        name = "given-inputs"
        path = "positive.onnx"
        pipeline = "relu-to-identity"
        pass_modules = ["my_passes.py"]
        data = "positive.npz"
        """)
    random_inputs, given_inputs = golden.run_manifest(golden.load_manifest(path).entries,
                                                      progress=False)
    assert random_inputs.status == "PARITY FAILED", random_inputs.explain()
    assert given_inputs.status == "ok", given_inputs.explain()
    assert given_inputs.parity.primary.input_shapes == {"input": [1, 6, 6, 3]}
    loaded = golden.load_parity_data(suite / "positive.npz", model)
    assert loaded["input"].dtype == np.float32 and float(loaded["input"].min()) == 0.5


def test_data_file_that_does_not_fit_exits_2(suite: Path, capsys) -> None:
    np.savez(suite / "wrong.npz", image=np.zeros((1, 6, 6, 3), np.float32))
    path = write(suite, '[[model]]\nname = "m"\npath = "nhwc_transposes.onnx"\ndata = "wrong.npz"\n')
    code, out, err = run_cli(str(path), capsys=capsys)
    assert code == 2
    assert ("model 'm', key 'data': wrong.npz must hold one array per model input (input); "
            "missing ['input'], unknown ['image']") in err
    assert out.splitlines()[1].endswith("ERROR")


def test_k_selects_entries(suite: Path, capsys) -> None:
    path = write(suite, """
        [[model]]
        name = "conv-branches"
        path = "conv_branches.onnx"

        [[model]]
        name = "nhwc-transposes"
        path = "nhwc_transposes.onnx"
        """)
    manifest = golden.load_manifest(path)
    assert [e.name for e in manifest.select("branch")] == ["conv-branches"]
    assert [e.name for e in manifest.select("*-trans*")] == ["nhwc-transposes"]
    assert [e.name for e in manifest.select("nhwc, conv")] == ["conv-branches", "nhwc-transposes"]
    code, out, _ = run_cli(str(path), "-k", "nhwc", capsys=capsys)
    assert code == 0 and "conv-branches" not in out and "nhwc-transposes" in out
    code, _, err = run_cli(str(path), "-k", "resnet", capsys=capsys)
    assert code == 2 and "-k 'resnet' selects no entry" in err


#: A pass module that leaves a mark when it is imported (a pass module is code that runs).
MARKING_MODULE = '''
from pathlib import Path

Path(__file__).with_suffix(".imported").write_text("imported")

from dataclasses import dataclass
from typing import ClassVar

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class Nothing(Pass):
    """Does nothing."""

    name: ClassVar[str] = "nothing"

    def run(self, graph, ctx):
        return PassResult()
'''


def test_k_imports_the_pass_modules_of_selected_entries_only(suite: Path, capsys) -> None:
    (suite / "marking.py").write_text(MARKING_MODULE)
    (suite / "broken.py").write_text("def broken(:\n")
    path = write(suite, """
        [[model]]
        name = "conv-branches"
        path = "conv_branches.onnx"

        [[model]]
        name = "excluded"
        path = "conv_branches.onnx"
        pipeline = "nothing,no-such-pass"
        pass_modules = ["marking.py", "broken.py"]
        [model.expect]
        passes = { "not-run" = 3 }
        """)
    code, out, err = run_cli(str(path), "-k", "conv", capsys=capsys)
    assert code == 0, err
    assert "conv-branches" in out and "excluded" not in out
    assert not (suite / "marking.imported").exists()
    assert [e.name for e in golden.load_manifest(path, select="conv").select("conv")] == \
        ["conv-branches"]
    assert not (suite / "marking.imported").exists()
    # A selected entry's pipeline is still checked against its modules' passes.
    code, _, err = run_cli(str(path), "-k", "excluded", capsys=capsys)
    assert code == 2 and "model 'excluded', key 'pipeline': pass module" in err
    assert "broken.py is not valid Python" in err


def test_names_with_control_characters_are_refused(suite: Path) -> None:
    path = write(suite, '[[model]]\nname = "evil\\u001b[31mred"\npath = "conv_branches.onnx"\n')
    with pytest.raises(InputError) as refused:
        golden.load_manifest(path)
    assert str(refused.value) == (
        f"{path}:2: model #1, key 'name': contains the non-printable character U+001B; names are "
        "printable text (they name test cases in terminals and JUnit XML)")


def test_junit_xml_is_well_formed_whatever_names_and_errors_hold() -> None:
    entry = golden.GoldenEntry(name="tab\there\x1b[31m\x00", source="m\x07.onnx", path=None,
                               example="x", pipeline="default")
    outcome = golden.GoldenOutcome(entry=entry, error=InputError("bad byte \x01 in \ufffe"))
    document = ElementTree.fromstring(golden.junit_xml([outcome], "suite\x02"))
    case = document.find("testsuite/testcase")
    assert case.get("name") == "tab\there\\u001b[31m\\u0000"
    assert case.get("classname") == "golden.suite\\u0002"
    assert case.find("error").get("message") == \
        "error (InputError): bad byte \\u0001 in \\ufffe"
    assert "m\\u0007.onnx" in case.find("error").text


def test_update_rewrites_counts_keeping_comments_and_order(suite: Path, capsys) -> None:
    layers, after = measured_layers()
    original = f"""
        # Suite header comment.
        [[model]]
        name = "branches"             # the branches model
        path = "conv_branches.onnx"
        pipeline = "{CONV_PIPELINE}"
        [model.expect]
        # counts reviewed by the team
        layers = 99                   # final count
        passes = {{ "horizontal-fusion" = 98, "conv-bias-activation-fusion" = 97 }}

        [[model]]
        name = "transposes"
        path = "nhwc_transposes.onnx"
        pipeline = "transpose-cancellation"
        """
    path = write(suite, original)
    code, out, err = run_cli(str(path), "--update", capsys=capsys)
    assert code == 0, out + err
    transposes_layers = golden.run_entry(golden.load_manifest(path).entries[1]).layers
    expected = textwrap.dedent(original).lstrip() \
        .replace("layers = 99 ", f"layers = {layers} ") \
        .replace('"horizontal-fusion" = 98', f'"horizontal-fusion" = {after["horizontal-fusion"]}') \
        .replace('"conv-bias-activation-fusion" = 97',
                 f'"conv-bias-activation-fusion" = {after["conv-bias-activation-fusion"]}') \
        + f"\n[model.expect]\nlayers = {transposes_layers}\n"
    assert path.read_text() == expected
    assert f"  branches: layers 99 -> {layers}" in err
    assert f"  transposes: layers (none) -> {transposes_layers}" in err
    assert "all passed" in out

    before = path.read_bytes()
    code, _, err = run_cli(str(path), "--update", capsys=capsys)
    assert code == 0 and "already up to date" in err and path.read_bytes() == before


def test_update_leaves_parity_failures_failing(suite: Path, capsys) -> None:
    path = write(suite, """
        [[model]]
        name = "broken"
        path = "conv_branches.onnx"
        pipeline = "relu-to-identity"
        pass_modules = ["my_passes.py"]
        [model.expect]
        layers = 50
        """)
    code, out, err = run_cli(str(path), "--update", capsys=capsys)
    assert code == 1
    assert "layers = 11" in path.read_text()  # the count is measured and written for review
    assert "PARITY FAILED" in out and "broken (parity failed" in err


def test_junit_path_is_checked_before_running(suite: Path, capsys) -> None:
    path = write(suite, '[[model]]\nname = "m"\npath = "conv_branches.onnx"\n')
    code, _, err = run_cli(str(path), "--junit", str(suite), capsys=capsys)
    assert code == 2 and "is a folder" in err


def test_data_range_draws_the_parity_inputs_from_the_range(suite: Path) -> None:
    """The same wrong-for-negatives pass: caught on signed inputs, not on a declared [0, 2)."""
    import onnx

    from trtcompile import ir

    model = onnx.load(suite / "nhwc_transposes.onnx")
    for init in model.graph.initializer:
        values = np.abs(onnx.numpy_helper.to_array(init))
        init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    ir.save(model, suite / "positive.onnx")
    path = write(suite, """
        [[model]]
        name = "ranged"
        path = "positive.onnx"
        pipeline = "relu-to-identity"
        pass_modules = ["my_passes.py"]
        data_range = [0, 2]
        """)
    (ranged,) = golden.run_manifest(golden.load_manifest(path).entries, progress=False)
    assert ranged.status == "ok", ranged.explain()


@pytest.mark.parametrize("value, message", [
    ("[1, 0]", "needs LO < HI"), ("[0, inf]", "must be finite"), ('"0,1"', "expected [LO, HI]"),
    ("[0]", "expected [LO, HI]")])
def test_bad_data_range_names_the_entry(suite: Path, value: str, message: str) -> None:
    from trtcompile.errors import InputError

    path = write(suite, f'[[model]]\nname = "m"\npath = "nhwc_transposes.onnx"\n'
                        f'data_range = {value}\n')
    with pytest.raises(InputError) as info:
        golden.load_manifest(path)
    assert message in str(info.value) and "data_range" in str(info.value)
