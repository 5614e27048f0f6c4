"""bench.families --quick end to end: every family/model/batch row, finite timings, ratios from them."""

import json
import math
import statistics

import pytest

from bench import families

INFERENCE = {("tabular", "mlp"), ("image", "cnn"), ("image", "mlp"), ("text", "lstm"), ("text", "minilm")}
TRAINING = {("tabular", "mlp"), ("image", "cnn"), ("text", "lstm")}


def positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("bench") / "families.json"
    assert families.main(["--quick", "--out", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_inference_rows_cover_every_model_and_batch(report):
    rows = report["inference"]["results"]
    keys = [(r["family"], r["model"], r["batch"]) for r in rows]
    assert sorted(keys) == sorted((f, m, b) for f, m in INFERENCE for b in (1, 32))
    for r in rows:
        times = (r["torch_ms"], r["ort_fp32_ms"], r["ort_int8_ms"])
        assert all(positive(t) for t in times), r
        assert r["torch_over_ort"] == pytest.approx(r["torch_ms"] / r["ort_fp32_ms"])
        assert r["fp32_over_int8"] == pytest.approx(r["ort_fp32_ms"] / r["ort_int8_ms"])
        assert r["max_abs_logit_diff"]["ort_fp32"] < 1e-4  # the same network in both runtimes
    assert "random weights" in report["weights_note"]


@pytest.mark.slow
def test_training_rows_give_throughput_and_overhead(report):
    rows = report["training"]["results"]
    assert {(r["family"], r["model"]) for r in rows} == TRAINING
    for r in rows:
        assert positive(r["pipeline_sps"]) and positive(r["minimal_sps"]), r
        assert r["overhead_pct"] == pytest.approx((r["minimal_sps"] / r["pipeline_sps"] - 1) * 100)
        cpu = {side: statistics.median(times) for side, times in r["cpu_seconds"].items()}
        assert r["cpu_overhead_pct"] == pytest.approx((cpu["pipeline"] / cpu["minimal"] - 1) * 100)
        assert r["meets_goal"] == (r["overhead_pct"] <= report["training"]["goal_overhead_pct"])
        assert r["same_training"], r["last_val_loss"]  # both loops made the same updates
    assert set(report["training"]["includes"]) == {"pipeline", "minimal"}
