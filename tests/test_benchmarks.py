"""Smoke run of the benchmark entry point, so it does not rot (the real runs are manual:
``python -m benchmarks.run --suite quick --out DIR``): schema of the JSON, positive ratios, the Markdown
table; and the stability gate that refuses to report a case whose timings spread too much."""
import itertools
import json
import math
import time

import pytest

from benchmarks import run
from benchmarks.common import Context, measure
from benchmarks.timing import summarize

RECORD_KEYS = {"schema_version", "suite", "id", "group", "entry_point", "network", "network_description",
               "network_params", "batch", "num_steps", "nfe", "dtype", "config", "timing", "memory", "limit",
               "ratio", "ratio_median", "throughput", "status", "note", "extra", "loadavg", "machine"}
MACHINE_KEYS = {"host", "os", "python", "processor", "cpu_count", "cpus_usable", "backend", "device_kind",
                "device_count", "versions", "git_commit", "git_dirty", "xla_flags", "date"}
TIMING_KEYS = {"compile_s", "trace_lower_s", "xla_compile_s", "repeats", "min_s", "median_s", "max_s", "spread"}


def _positive(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    doc = run.main(["--suite", "smoke", "--out", str(out)])
    return out, doc


@pytest.mark.slow
@pytest.mark.compile_bound
def test_smoke_json_schema(smoke):
    out, doc = smoke
    saved = json.loads((out / "benchmarks.json").read_text())
    assert saved == json.loads(json.dumps(doc))
    assert saved["schema_version"] == 1 and saved["suite"] == "smoke"
    assert MACHINE_KEYS <= set(saved["machine"])
    assert saved["machine"]["versions"]["jax"] and saved["machine"]["cpu_count"] >= 1
    recs = saved["records"]
    assert {r["group"] for r in recs} == {"sampling", "training", "compile", "metrics"}
    assert len({r["id"] for r in recs}) == len(recs)
    for r in recs:
        assert RECORD_KEYS <= set(r), r["id"]
        # Compile-time targets can be missed on a loaded machine (noise); nothing may error.
        assert r["status"] == "ok" or (r["group"] == "compile" and r["status"] == "target_missed"), \
            (r["id"], r["note"])
        assert r["schema_version"] == 1 and r["machine"] == saved["machine"]


@pytest.mark.slow
def test_smoke_ratios_and_timings(smoke):
    _, doc = smoke
    measured = [r for r in doc["records"] if r["group"] in ("sampling", "training")]
    assert len(measured) >= 3
    for r in measured:
        assert _positive(r["ratio"]) and _positive(r["ratio_median"]), r["id"]
        assert TIMING_KEYS <= set(r["timing"])
        assert all(_positive(r["timing"][k]) for k in ("compile_s", "min_s", "median_s")), r["id"]
        assert _positive(r["limit"]["min_s"]) and _positive(r["memory"]["peak_bytes"])
    for r in doc["records"]:
        if r["group"] == "sampling":
            assert r["nfe"] == r["limit"]["nfe"] and _positive(r["throughput"]["samples_per_s"])
            assert r["extra"]["limit_output_finite"]
    (feat,) = [r for r in doc["records"] if r["group"] == "metrics"]    # extract_features vs bare network
    assert _positive(feat["ratio"]) and _positive(feat["throughput"]["images_per_s"])
    assert feat["extra"]["features_finite"] and _positive(feat["limit"]["min_s"])
    (comp,) = [r for r in doc["records"] if r["group"] == "compile"]
    assert set(comp["extra"]["compile_s_by_steps"]) == {"10", "100"}
    assert all(_positive(v) for v in comp["extra"]["peak_bytes_by_steps"].values())


@pytest.mark.slow
def test_smoke_markdown(smoke):
    out, doc = smoke
    md = (out / "benchmarks.md").read_text()
    assert "## Sampling" in md and "## Training" in md and "## Targets" in md and "## Feature extraction" in md
    assert all(r["id"] in md for r in doc["records"])


def test_unstable_case_is_not_reported():
    ctx = Context(suite="t", params={}, repeats=6, max_spread=0.05, retries=1, budget_s=1.0, machine={},
                  log=lambda m: None)
    delays = itertools.cycle([0.001, 0.004])
    sums, status, note = measure(ctx, {"run": lambda: time.sleep(next(delays))})
    assert status == "unstable" and "not reported" in note and sums["run"]["spread"] > 0.05
    ok = summarize([1.0, 1.1, 1.0])
    assert ok["min_s"] == 1.0 and ok["median_s"] == 1.0 and ok["spread"] == 0.0 and ok["repeats"] == 3


@pytest.mark.slow
def test_readme_summary_reports_each_run_and_the_median(smoke):
    from benchmarks.report import summary
    _, doc = smoke
    other = json.loads(json.dumps(doc))
    timed = [r for r in other["records"] if r["group"] in ("sampling", "training") and r["ratio"]]
    timed[0]["ratio"] *= 2.0                      # a deep copy: doc keeps its own ratio
    timed[1]["status"], timed[1]["ratio"] = "unstable", None
    table = summary([doc, other, doc])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    r0 = next(r for r in doc["records"] if r["id"] == timed[0]["id"])
    assert rows[r0["id"]].endswith(f"| {r0['ratio']:.2f} / {2 * r0['ratio']:.2f} / {r0['ratio']:.2f} | {r0['ratio']:.2f} |")
    r1 = next(r for r in doc["records"] if r["id"] == timed[1]["id"])
    assert f"{r1['ratio']:.2f} / unstable / {r1['ratio']:.2f}" in rows[r1["id"]]
    assert "3 run(s)" in table and "Compile-time growth" in table


@pytest.mark.slow
def test_multidevice_subprocess_runs_and_8_devices_match_1():
    """The quick suite's 1-vs-8-device training case (a subprocess with 8 simulated devices) runs through the
    ahead-of-time compiled training program and finds the 8-device parameters equal to the 1-device ones
    (its own float32 gate: max |diff| <= 1e-5 max(1, max |param|))."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "benchmarks.multidevice", "--batch", "16", "--steps", "2",
                          "--repeats", "1", "--budget", "1"], cwd=root, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    records = json.loads(out.stdout)
    assert [r["extra"]["num_devices"] for r in records] == [1, 8]
    assert records[1]["extra"]["match"] is True and records[1]["status"] in ("ok", "unstable")
    assert records[1]["extra"]["max_abs_param_diff_vs_1_device"] <= 1e-5 * max(1.0, records[1]["extra"]["max_abs_param"])


@pytest.mark.slow
@pytest.mark.compile_bound
def test_likelihood_field_benchmark_smoke_and_its_four_fields_agree(tmp_path, x64):
    """``benchmarks.likelihood_field`` (2-D, 8 examples, 1 repeat): one record whose NFE is the solve's and whose
    ratios are the quotients of its minimum times, the solve with the per-example field agreeing with it; the four
    ways of evaluating the field (per example under vmap, the solve's fused field, batched by hand, one shared
    time) give the same drift and exact divergence (float64, 1e-12), the divergence equal to the trace of the
    drift's Jacobian; bad options exit with a message."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import sde_jax as sj
    from benchmarks import likelihood_field as lf
    from benchmarks.peers import likelihood_mixture

    gmm = likelihood_mixture(3)
    sde = sj.VPSDE()
    score = gmm.perturbed_score(sde)
    x = gmm.sample(jax.random.key(0), 5)
    fields = lf.fields(sde, score)
    for t in (jnp.linspace(0.1, 0.9, 5), jnp.full((5,), 0.3)):
        outs = {k: fields[k](t, x) for k in ("field_per_example", "field_fused", "field_batched")}
        if bool(jnp.all(t == t[0])):
            outs["field_shared_time"] = fields["field_shared_time"](t, x)
        jac = jax.vmap(lambda ti, xi: jax.jacfwd(lambda v: sj.sdes.probability_flow_drift(
            sde, score, v[None], ti[None])[0])(xi))(t, x)
        for f, d in outs.values():
            np.testing.assert_allclose(f, sj.sdes.probability_flow_drift(sde, score, x, t), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(d, jnp.trace(jac, axis1=1, axis2=2), rtol=1e-12, atol=1e-12)
    rec = lf.main(["--out", str(tmp_path), "--dim", "2", "--batch", "8", "--repeats", "1"])
    saved = json.loads((tmp_path / "likelihood_field.json").read_text())
    assert saved["records"] == [json.loads(json.dumps(rec))] and saved["machine"]["backend"] == "cpu"
    assert set(rec["cases"]) == {"solve", "solve_per_example", "field_per_example", "field_fused", "field_batched",
                                 "field_shared_time"}
    assert rec["nfe"] > 7 and (rec["nfe"] - 1) % 6 == 0 and rec["abs_err_mean"] < 1e-3
    assert rec["nfe_per_example"] == rec["nfe"] and rec["max_abs_diff_fused_vs_per_example"] < 1e-12
    c = rec["cases"]
    assert rec["ratios"]["solve_per_example_over_solve"] == pytest.approx(
        c["solve_per_example"]["min_s"] / c["solve"]["min_s"])
    assert rec["ratios"]["field_per_example_over_batched"] == pytest.approx(
        c["field_per_example"]["min_s"] / c["field_batched"]["min_s"])
    with pytest.raises(SystemExit):
        lf.main(["--out", str(tmp_path), "--dim", "0"])


@pytest.mark.compile_bound
def test_train_breakdown_smoke(tmp_path):
    """``benchmarks.train_breakdown`` at batch 8, 2 repeats: one record with the four cases, positive times, and
    ``ratio = limit min / case min`` (1 for the limit itself); bad options exit with a message."""
    from benchmarks import train_breakdown

    rec = train_breakdown.main(["--out", str(tmp_path), "--batch", "8", "--repeats", "2"])
    saved = json.loads((tmp_path / "train_breakdown.json").read_text())
    assert saved["records"] == [json.loads(json.dumps(rec))] and saved["machine"]["backend"] == "cpu"
    assert list(rec["cases"]) == ["limit", "dsm_grad", "loss_grad", "train_step"] and rec["batch"] == 8
    for name, c in rec["cases"].items():
        assert c["repeats"] == 2 and _positive(c["min_s"])
        assert rec["ratio"][name] == pytest.approx(rec["cases"]["limit"]["min_s"] / c["min_s"])
    assert rec["ratio"]["limit"] == 1.0
    with pytest.raises(SystemExit):
        train_breakdown.main(["--out", str(tmp_path), "--repeats", "0"])


@pytest.mark.slow
@pytest.mark.compile_bound
def test_group_norm_benchmark_smoke(tmp_path):
    """``benchmarks.group_norm`` on one tiny layer shape and a tiny NCSN++ (nf=8, one resolution), 2 repeats: the
    layer and network records with both implementations' forward and gradient timed, ``speedup = Flax min / ours
    min``, the two forwards equal to float32 rounding (the network built with the same parameters); bad options
    exit with a message."""
    from benchmarks import group_norm

    small = ["model.nf=8", "model.ch_mult=(1,)", "model.attn_resolutions=()"]
    recs = group_norm.main(["--out", str(tmp_path), "--layer-shapes", "2,4,4,8,2", "--repeats", "2",
                            "--net-repeats", "2", "--batch", "2", *(f"--set={o}" for o in small)])
    saved = json.loads((tmp_path / "group_norm.json").read_text())
    assert saved["records"] == json.loads(json.dumps(recs))
    assert [r["id"] for r in recs] == ["layer/2x4x4x8/g2", "net/small/ncsnpp/b2"]
    for r in recs:
        assert set(r["cases"]) == {"flax_forward", "ours_forward", "flax_grad", "ours_grad"}
        assert all(c["repeats"] == 2 and _positive(c["min_s"]) for c in r["cases"].values())
        for kind in ("forward", "grad"):
            assert r["speedup"][kind] == pytest.approx(r["cases"][f"flax_{kind}"]["min_s"]
                                                       / r["cases"][f"ours_{kind}"]["min_s"])
    assert recs[0]["max_abs_diff"] < 1e-5 and recs[1]["max_abs_diff"] < 1e-5
    from sde_jax.models import layers
    from sde_jax.models.normalization import GroupNorm
    assert layers.GroupNorm is GroupNorm                              # the swap is undone
    for bad in (["--repeats", "0"], ["--layer-shapes", "2,4,4,8,3"], ["--layer-shapes", "2,4,4"],
                ["--layer-shapes", "a,b"]):
        with pytest.raises(SystemExit):
            group_norm.main(["--out", str(tmp_path), *bad])


@pytest.mark.slow
@pytest.mark.compile_bound
def test_cpu_devices_benchmark_smoke(tmp_path):
    """``benchmarks.cpu_devices`` on a tiny NCSN++ (nf=8, one resolution, no attention), batch 4, a 2-level PC
    sampler, 1 and 2 simulated
    devices (one process each): each process saw the device count asked for, the samples are finite with NFE
    ``2 N`` (predictor + corrector), and ``speedup`` is the 1-device minimum over the N-device one; a batch not
    divisible by a device count and bad counts exit with a message."""
    from benchmarks import cpu_devices

    small = ["model.nf=8", "model.ch_mult=(1,)", "model.attn_resolutions=()"]
    doc = cpu_devices.main(["--out", str(tmp_path), *(f"--set={o}" for o in small), "--batch", "4", "--devices",
                            "1,2", "--pc-steps", "2", "--repeats", "1", "--forward-repeats", "2"])
    saved = json.loads((tmp_path / "cpu_devices.json").read_text())
    assert saved["records"] == json.loads(json.dumps(doc["records"])) and saved["overrides"] == small
    one, two = doc["records"]
    assert (one["devices"], two["devices"]) == (1, 2)
    for r in doc["records"]:
        assert r["pc"]["nfe"] == 4 and r["pc"]["finite"] and _positive(r["forward"]["min_s"])
        for case in ("forward", "pc"):
            assert r[case]["speedup"] == pytest.approx(one[case]["min_s"] / r[case]["min_s"])
        assert r["forward"]["repeats"] == 2 and r["pc"]["repeats"] == 1
    for bad in (["--batch", "3"], ["--devices", "0,1"], ["--devices", "one"], ["--forward-repeats", "0"]):
        with pytest.raises(SystemExit):
            cpu_devices.main(["--out", str(tmp_path), *bad])
