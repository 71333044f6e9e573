"""The benchmark stability gate (benchmarks.common.measure): a case too spread to report is re-timed, with more
repeats each time, within a time budget, and the run reports how often that happened. Scripted timings: no
sleeps, no dependence on the machine's load."""
from benchmarks import common
from benchmarks.common import Context, measure, stability


def _ctx(**kw):
    return Context(suite="t", params={}, repeats=4, max_spread=0.1, machine={}, log=lambda m: None,
                   **dict(dict(retries=1, budget_s=1.0), **kw))


def _scripted(monkeypatch, spreads):
    """_attempt returns the given spreads in turn and records the repeat scale it was asked for."""
    scales, it = [], iter(spreads)

    def attempt(ctx, thunks, scale=1):
        scales.append(scale)
        s = next(it)
        return {name: dict(repeats=4 * scale, min_s=1.0, median_s=1.0 + s, max_s=2.0, spread=s) for name in thunks}

    monkeypatch.setattr(common, "_attempt", attempt)
    return scales


def test_unstable_case_is_retimed_with_more_repeats_until_stable(monkeypatch):
    """Spreads 0.5, 0.4, 0.3, 0.05 with a large re-timing budget: four attempts at 1x, 2x, 4x, 8x the repeats,
    status ok, and every summary says 4 attempts."""
    scales = _scripted(monkeypatch, [0.5, 0.4, 0.3, 0.05])
    sums, status, note = measure(_ctx(retime_budget_s=1e9), {"run": None, "limit": None})
    assert status == "ok" and note == ""
    assert scales == [1, 2, 4, 8]
    assert sums["run"]["attempts"] == sums["limit"]["attempts"] == 4 and sums["run"]["spread"] == 0.05


def test_retiming_stops_at_the_budget_and_keeps_the_least_spread_attempt(monkeypatch):
    """With no re-timing budget only the ``retries`` extra attempts are made (1 here); the case is refused as
    unstable, the note gives the attempts, and the least spread attempt is kept."""
    scales = _scripted(monkeypatch, [0.5, 0.3, 0.01])
    sums, status, note = measure(_ctx(retime_budget_s=0.0), {"run": None})
    assert scales == [1, 2]
    assert status == "unstable" and "after 2 attempts" in note and "not reported" in note
    assert sums["run"]["spread"] == 0.3 and sums["run"]["attempts"] == 2


def test_stability_counts_retimed_and_unstable_cases():
    """stability() over records: timed = records with attempts, retimed = attempts > 1, unstable by status."""
    recs = [dict(id="a", status="ok", timing=dict(attempts=1)), dict(id="b", status="ok", timing=dict(attempts=3)),
            dict(id="c", status="unstable", timing=dict(attempts=4)), dict(id="d", status="error", timing=None)]
    assert stability(recs) == dict(timed=3, retimed=2, unstable=1, retimed_ids=["b", "c"], unstable_ids=["c"])
