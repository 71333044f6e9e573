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
    return c


def test_writes_figures_and_metrics(tmp_path):
    metrics = run(_small_config(), str(tmp_path))
    for name in ("trajectories.png", "mala_vs_ula.png", "annealed_vs_plain.png", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 1000, name
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["mixture_annealed_vs_plain"]["plain_langevin_weight_error"] > 0.1
    assert 0 < on_disk["banana_mala_vs_ula"]["mala_acceptance_rate"] <= 1
    assert metrics["mixture_annealed_vs_plain"]["annealed_nfe"] == 10 * 50


def test_unwritable_workdir_fails_before_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="workdir .* is not writable"):
        run(_small_config(), str(blocker / "sub"))


def test_main_rejects_unknown_config_field(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.langevin", f"--workdir={tmp_path}",
                           "--config.no_such_field=1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no_such_field" in proc.stderr
