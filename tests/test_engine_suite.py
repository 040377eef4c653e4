"""The benchmark suite's bookkeeping: which exports it makes and how a partitioned model is counted."""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks import engine_suite, model_suite
from tests.backend import models


def test_every_torch_model_is_exported_with_both_exporters() -> None:
    keys = model_suite.available_keys()
    assert len(keys) == len(set(keys))
    assert set(model_suite.TF_MODELS) | set(model_suite.LIGHT_MODELS) <= set(keys)
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnxscript") is None:
        assert not any(key.endswith(model_suite.DYNAMO) for key in keys)
        return
    torch_keys = [key for key in keys
                  if key not in model_suite.TF_MODELS and key not in model_suite.LIGHT_MODELS]
    legacy = {key for key in torch_keys if not key.endswith(model_suite.DYNAMO)}
    assert {key + model_suite.DYNAMO for key in legacy} == set(torch_keys) - legacy
    assert model_suite.exporter_of("bert-hf-dynamo") == ("bert-hf", "dynamo")
    assert model_suite.exporter_of("bert-hf") == ("bert-hf", "legacy")


def test_an_unknown_model_is_refused_by_name(tmp_path) -> None:
    with pytest.raises(KeyError, match="unknown benchmark model 'no-such-dynamo'"):
        model_suite.load("no-such-dynamo", tmp_path)


def test_a_partitioned_model_counts_its_engine_layers_and_the_nodes_left_to_onnx_runtime() -> None:
    model = models.rejected_op_model("BitShift")
    figure, result = engine_suite._segment_layers(model, "none")
    outcome = result.partition
    built = [s for s in outcome.segments if s.engine is not None]
    assert built and outcome.fallback
    engine_layers = sum(s.engine.compute_layers for s in built)
    on_runtime = outcome.total_compute_nodes - sum(s.compute_nodes for s in built)
    assert on_runtime >= len(outcome.fallback) >= 1
    assert figure == engine_layers + on_runtime
