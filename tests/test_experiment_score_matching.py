"""The score-matching experiment runs end to end (tiny config: three methods, both targets, a few steps) and
writes its figures and metrics; bad configs fail before any work."""
import json

import pytest

from experiments.score_matching import METHODS, get_config, run


def _tiny_config():
    c = get_config()
    c.methods = ("ssm", "fd_ssm", "energy_fd_dsm")
    c.num_steps, c.steps_per_call, c.batch_size = 20, 10, 32
    c.pool_size, c.num_test, c.quiver_points = 2000, 200, 6
    return c


@pytest.mark.slow  # end to end: every figure and metric of a small run
@pytest.mark.compile_bound
def test_writes_figures_and_metrics(tmp_path):
    metrics = run(_tiny_config(), str(tmp_path))
    for name in ("score_fields_mixture.png", "score_fields_banana.png", "score_error.png", "step_time.png",
                 "metrics.json"):
        assert (tmp_path / name).stat().st_size > 1000, name
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for target in ("mixture", "banana"):
        for m in ("ssm", "fd_ssm", "energy_fd_dsm"):
            r = on_disk["results"][target][m]
            assert r["finite"] and r["score_error"] > 0 and r["ms_per_step"] > 0, (target, m, r)
    assert set(metrics["fd_speedup"]) == {"fd_ssm/ssm"} and metrics["fd_speedup"]["fd_ssm/ssm"] > 0
    assert set(get_config().methods) == set(METHODS)          # the default runs every method


def test_bad_config_fails_before_work(tmp_path):
    c = _tiny_config()
    c.methods = ("ssm", "nope")
    with pytest.raises(ValueError, match=r"config.methods: unknown \['nope'\]"):
        run(c, str(tmp_path))
    c = _tiny_config()
    c.steps_per_call = 7
    with pytest.raises(ValueError, match="must be a multiple of config.steps_per_call"):
        run(c, str(tmp_path))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="workdir .* is not writable"):
        run(_tiny_config(), str(blocker / "sub"))
