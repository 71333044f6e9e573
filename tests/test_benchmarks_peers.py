"""The peer benchmark suite's plumbing (benchmarks/peers.py): the same MLP in Flax and torch, the tiny
``peers-smoke`` suite end to end, and the ``skipped`` record when a peer package is missing. Timings are never
asserted (benchmarks measure performance; tests check that the benchmark measures the right thing)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import peers
from benchmarks.common import Context


def _ctx():
    return Context(suite="test", params={}, repeats=1, max_spread=float("inf"), retries=0, budget_s=0.0,
                   machine={}, min_repeats=1, log=lambda msg: None)


def test_missing_peer_is_recorded_as_skipped_with_the_install_command(monkeypatch):
    """Without a peer package every peer case is a 'skipped' record whose note names the package and the
    install command; nothing is timed."""
    monkeypatch.setattr(peers, "missing_peers", lambda names=(): ["diffusers"])
    ctx = _ctx()
    peers.run_peers(ctx, {"peers": dict(ve_pc=[(16, 4, 5)], unet_batches=[2], kdiff=[("heun", 16, 4, 3)])})
    assert [r["id"] for r in ctx.records] == ["peers/ve_pc/mlp16/b4/n5", "peers/unet_forward/b2",
                                              "peers/kdiff/heun/mlp16/b4/n3"]
    for r in ctx.records:
        assert r["status"] == "skipped" and r["ratio"] is None and r["timing"] is None
        assert "diffusers" in r["note"] and peers.INSTALL in r["note"]


@pytest.mark.compile_bound
def test_torch_mlp_equals_the_flax_mlp():
    """The peer's torch MLP (weights copied from Flax) gives the Flax scores to float32 rounding (rtol 1e-5,
    atol 1e-6), so both sides do the same work; sigma in [0.01, 50] covers the VE range."""
    torch = pytest.importorskip("torch")
    model, params, n = peers._mlp(16, 3)
    assert n == 3 * 16 + 16 + 2 * (16 * 16 + 16) + 16 * 2 + 2
    x = np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32)
    sigma = np.geomspace(0.01, 50.0, 8).astype(np.float32)
    ours = np.asarray(model.apply(params, jnp.asarray(x), jnp.asarray(sigma)))
    theirs = peers._torch_mlp(torch, params, 16, 3)(torch.from_numpy(x), torch.from_numpy(sigma)).detach().numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_peers_smoke_suite_writes_ratios(tmp_path):
    """``--suite peers-smoke`` (tiny sizes, 1 repeat) writes one ok record per case with ratio = peer min time /
    our min time and equal evaluation counts on both sides; the Markdown report has the peers table."""
    missing = peers.missing_peers()
    if missing:
        pytest.skip(f"peer packages not installed: {missing} ({peers.INSTALL})")
    from benchmarks.run import main

    doc = main(["--suite", "peers-smoke", "--out", str(tmp_path), "--no-multidevice"])
    recs = {r["id"]: r for r in doc["records"] if r["group"] == "peers"}
    assert set(recs) == {"peers/ve_pc/mlp16/b4/n5", "peers/kdiff/heun/mlp16/b4/n3",
                         "peers/kdiff/dpmpp_2m/mlp16/b4/n3", "peers/likelihood/gmm2/exact/b8/tol1e-05"}
    for r in recs.values():
        assert r["status"] == "ok", r["note"]
        assert r["ratio"] == pytest.approx(r["limit"]["min_s"] / r["timing"]["min_s"])
        assert r["nfe"] == r["config"].get("peer_nfe", r["nfe"])
    assert recs["peers/ve_pc/mlp16/b4/n5"]["nfe"] == 10
    assert recs["peers/ve_pc/mlp16/b4/n5"]["extra"]["ours_finite"]
    assert 0 < recs["peers/ve_pc/mlp16/b4/n5"]["extra"]["bare_over_ours"]
    assert json.loads((tmp_path / "benchmarks.json").read_text())["suite"] == "peers-smoke"
    assert "## Peers" in (tmp_path / "benchmarks.md").read_text()


@pytest.mark.slow
def test_likelihood_peer_is_the_papers_scipy_method_and_both_match_the_exact_density():
    """The scipy peer (RK45 on the host over the flattened batch, no torch needed) and ``log_likelihood`` solve
    the same problem: on a 2-D mixture with its exact score, both land within 2e-3 nats of the exact
    ``log p_eps`` at rtol = atol = 1e-5 (observed max: ours 4.3e-4, scipy 2.6e-4); the record's ratio is the
    peer's time over ours."""
    ctx = _ctx()
    peers.run_peers(ctx, {"peers": dict(likelihood=[(2, 8, 1e-5)])})
    (r,) = ctx.records
    assert r["id"] == "peers/likelihood/gmm2/exact/b8/tol1e-05" and r["status"] == "ok", r["note"]
    assert r["ratio"] == pytest.approx(r["limit"]["min_s"] / r["timing"]["min_s"])
    e = r["extra"]
    assert e["peer_nfe"] > 6 and r["nfe"] > 6
    assert e["ours_abs_err_max"] < 2e-3 and e["peer_abs_err_max"] < 2e-3, e


def test_peer_summary_gives_median_times_and_ratios_over_runs():
    """``benchmarks.report --summary`` on runs of the peers suite: per case the median over runs of the minimum
    times, each run's ratio and their median, the bare-network share and the likelihood errors; an unstable
    run is named and left out of the medians; a skipped case says so."""
    from benchmarks.report import summary

    def doc(ours, peer, status="ok", bare=0.8):
        recs = [dict(id="peers/ve_pc/mlp64/b16/n1000", group="peers", status=status, nfe=2000, config={},
                     timing=dict(min_s=ours), limit=dict(min_s=peer), ratio=peer / ours if status == "ok" else None,
                     extra=dict(bare_over_ours=bare)),
                dict(id="peers/likelihood/gmm10/exact/b256/tol1e-05", group="peers", status="ok", nfe=97,
                     config={}, timing=dict(min_s=0.4), limit=dict(min_s=0.2), ratio=0.5,
                     extra=dict(peer_nfe=80, ours_abs_err_mean=3.5e-4, peer_abs_err_mean=2.2e-4)),
                dict(id="peers/unet_forward/b16", group="peers", status="skipped", nfe=None, config={})]
        return dict(suite="peers", records=recs, loadavg_start=[0.1],
                    machine=dict(date="2026-12-01T00:00", git_commit="abc", backend="cpu", cpus_usable=2))

    table = summary([doc(0.05, 1.0), doc(0.06, 1.2, bare=0.7), doc(0.05, 1.5, status="unstable")])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| peers")}
    ve = rows["peers/ve_pc/mlp64/b16/n1000"]
    assert "| 2000 / 2000 | 55.0 | 1100.0 | 20.00 / 20.00 / unstable | 20.00 | 0.75 |" in ve
    lik = rows["peers/likelihood/gmm10/exact/b256/tol1e-05"]
    assert "| 97 / 80 | 400.0 | 200.0 | 0.50 / 0.50 / 0.50 | 0.50 | – | 3.5e-04 / 2.2e-04 |" in lik
    assert "skipped" in rows["peers/unet_forward/b16"] and "3 run(s)" in table
