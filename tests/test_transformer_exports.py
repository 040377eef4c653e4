"""The dynamo-export benchmark's table: each saved figure lands in its column, a model or exporter
not measured has no row, and a build that failed shows as a dash (figures given, nothing built)."""

from __future__ import annotations

from benchmarks import transformer_exports as bench


def _rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_each_figure_lands_in_its_column() -> None:
    saved = {"bert/dynamo": {"before": 159, "after": 136, "TensorRT": 158, "onnxsim": 157,
                             "onnxslim": None, "after parity": "passed",
                             "after attention": {"scales_folded": 24}}}
    text = bench.markdown(saved)
    assert _rows(text) == ["| BERT-base (12 layers) | dynamo | 159 | 136 | 158 | 157 | - | passed |"]
    assert "- **BERT-base (12 layers), dynamo**: scales_folded=24" in text


def test_rows_follow_the_models_and_exporters_in_order() -> None:
    saved = {"vit/dynamo-eager": {"after": 185}, "distilbert/dynamo": {"after": 68},
             "unknown/dynamo": {"after": 1}}
    rows = _rows(bench.markdown(saved))
    assert [row.split(" | ")[:2] for row in rows] == [["| DistilBERT (6 layers)", "dynamo"],
                                                      ["| ViT-B/16 (12 layers)", "dynamo-eager"]]
