"""Smoke test of the model benchmark: one repeat at batch 1 on a tiny NCSN++ (the real run is manual)."""
import json

import pytest

from benchmarks import models_bench


@pytest.mark.slow
@pytest.mark.compile_bound
def test_models_bench_smoke(tmp_path):
    records = models_bench.main([
        "--out", str(tmp_path), "--config", "small/ncsnpp", "--batch-sizes", "1", "--repeats", "1",
        "--set", "model.nf=8", "--set", "model.ch_mult=(1,)", "--set", "model.attn_resolutions=(8,)",
        "--set", "data.image_size=8"])
    saved = json.loads((tmp_path / "models_bench.json").read_text())
    assert saved == json.loads(json.dumps(records))
    (r,) = saved
    assert r["batch"] == 1 and r["repeats"] == 1 and r["jax_version"] and r["device"]
    for k in ("forward_compile_s", "forward_min_s", "forward_median_s", "fwd_bwd_min_s", "fwd_bwd_median_s"):
        assert r[k] > 0


def test_conv_in_scan_smoke(tmp_path):
    """The conv-in-scan benchmark on its first (smallest) shape, 2 scan steps, 1 repeat: one record per case with
    positive times and ratio = inside-per-iteration min / outside min; bad options exit with a message."""
    from benchmarks import conv_in_scan

    records = conv_in_scan.main(["--out", str(tmp_path), "--steps", "2", "--repeats", "1", "--shapes", "1"])
    saved = json.loads((tmp_path / "conv_in_scan.json").read_text())
    assert saved["records"] == json.loads(json.dumps(records)) and saved["machine"]["backend"] == "cpu"
    assert [r["what"] for r in records] == ["grad_w", "grad_x", "forward"]
    for r in records:
        assert r["scan_steps"] == 2 and r["outside"]["min_s"] > 0 and r["inside_per_iteration"]["min_s"] > 0
        assert r["ratio"] == pytest.approx(r["inside_per_iteration"]["min_s"] / r["outside"]["min_s"])
    with pytest.raises(SystemExit):
        conv_in_scan.main(["--out", str(tmp_path), "--shapes", "0"])
