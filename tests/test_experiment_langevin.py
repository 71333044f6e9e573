"""The Langevin experiment runs end to end (small config) and writes its figures and metrics."""
import json
import subprocess
import sys

import pytest

from experiments.langevin import get_config, run


def _small_config():
    c = get_config()
    c.banana_chains, c.banana_steps = 400, 200
    c.mixture_chains, c.ula_steps, c.ald_steps_each = 400, 200, 50
    c.traj_steps = 40
    c.diag_chains, c.diag_steps, c.diag_checkpoints = 8, 100, 4
    c.pt_every, c.pt_blocks, c.ald_steps_grid = 4, 2, (3,)
    return c


@pytest.mark.slow  # end to end: every figure and metric of a small run
@pytest.mark.compile_bound
def test_writes_figures_and_metrics(tmp_path):
    metrics = run(_small_config(), str(tmp_path))
    for name in ("trajectories.png", "mala_vs_ula.png", "annealed_vs_plain.png", "mala_densities.png",
                 "rhat_trace.png", "tempering_vs_ald.png", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 1000, name
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["mixture_annealed_vs_plain"]["plain_langevin_weight_error"] > 0.1
    assert 0 < on_disk["banana_mala_vs_ula"]["mala_acceptance_rate"] <= 1
    assert metrics["mixture_annealed_vs_plain"]["annealed_nfe"] == 10 * 50
    assert on_disk["mixture_mala"]["weight_error"] > 0.1          # MALA keeps the initial split of the chains
    diag = on_disk["diagnostics"]
    assert set(diag["banana"]) == {"ula", "mala"}
    assert set(diag["mixture"]) == {"ula", "mala", "ald_last_level", "replica_exchange"}
    for d in (*diag["banana"].values(), *diag["mixture"].values()):
        assert d["ess_min"] > 0 and d["split_rhat_max"] >= 0.9 and 3 <= len(d["rhat_trace"]) <= 4
    assert diag["mixture"]["mala"]["split_rhat_max"] > 1.5          # chains stuck in different modes
    tv = on_disk["tempering_vs_ald"]
    assert [p["evals_per_sample"] for p in tv["replica_exchange"]] == [8 * 5, 8 * 9]
    assert [p["evals_per_sample"] for p in tv["annealed_langevin"]] == [30]


def test_unwritable_workdir_fails_before_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="workdir .* is not writable"):
        run(_small_config(), str(blocker / "sub"))


def test_main_rejects_unknown_config_field(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.langevin", f"--workdir={tmp_path}",
                           "--config.no_such_field=1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no_such_field" in proc.stderr
