"""Markdown tables of a run's records, one table per group, and a summary of the issue's targets."""
from __future__ import annotations

__all__ = ["markdown", "summary", "TARGETS", "check_targets"]

TARGETS = [
    # (description, predicate on a record, minimum ratio)
    ("PC sampler, toy MLP, batch >= 256", lambda r: r["group"] == "sampling" and r["entry_point"] == "pc_sample"
     and r["network"] == "mlp" and (r["batch"] or 0) >= 256, 0.95),
    ("ULA, toy MLP, batch >= 256", lambda r: r["group"] == "sampling" and r["entry_point"] == "run_chain(ula_step)"
     and r["network"] == "mlp" and (r["batch"] or 0) >= 256, 0.95),
    ("train step vs forward+backward, toy MLP, batch >= 256", lambda r: r["group"] == "training"
     and r["network"] == "mlp" and (r["batch"] or 0) >= 256 and r.get("limit") is not None, 0.90),
]


def check_targets(records) -> list[dict]:
    """For each ratio target: the cases it covers, which met it, which missed it, which were not reported."""
    out = []
    for desc, pred, minimum in TARGETS:
        rs = [r for r in records if pred(r)]
        out.append(dict(
            target=f"{desc}: ratio >= {minimum}", cases=len(rs),
            met=[r["id"] for r in rs if isinstance(r["ratio"], float) and r["ratio"] >= minimum],
            missed=[(r["id"], round(r["ratio"], 3)) for r in rs if isinstance(r["ratio"], float) and r["ratio"] < minimum],
            not_reported=[(r["id"], r["status"]) for r in rs if not isinstance(r["ratio"], float)]))
    comp = [r for r in records if r["group"] == "compile"]
    out.append(dict(
        target="compile time within 20% from fewest to most steps", cases=len(comp),
        met=[r["id"] for r in comp if r["extra"].get("compile_flat")],
        missed=[(r["id"], round(r["extra"]["compile_growth"], 3)) for r in comp
                if "compile_flat" in r["extra"] and not r["extra"]["compile_flat"]],
        not_reported=[(r["id"], r["status"]) for r in comp if "compile_flat" not in r["extra"]]))
    return out


def _f(v, fmt="{:.3g}", none="–"):
    return none if v is None else fmt.format(v)


def _ms(s):
    return _f(None if s is None else 1e3 * s, "{:.3f}")


def _mib(b):
    return _f(None if b is None else b / 2**20, "{:.2f}")


def _status(r):
    return r["status"] + (f" ({r['note']})" if r.get("note") and r["status"] != "ok" else "")


def _rate(r, key):
    thr = r.get("throughput") or {}
    return _f(thr.get(key), "{:.4g}")


def _sampling_rows(rs):
    head = ("| case | batch | steps | NFE | min ms | median ms | spread | samples/s | evals/s | limit min ms | "
            "ratio | ratio (median) | compile s | peak MiB | status |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rs:
        t, lim = r.get("timing") or {}, r.get("limit") or {}
        rows.append(f"| {r['id']} | {_f(r['batch'], '{}')} | {_f(r['num_steps'], '{}')} | {_f(r['nfe'], '{}')} | "
                    f"{_ms(t.get('min_s'))} | {_ms(t.get('median_s'))} | {_f(t.get('spread'), '{:.0%}')} | "
                    f"{_rate(r, 'samples_per_s')} | {_rate(r, 'evals_per_s')} | {_ms(lim.get('min_s'))} | "
                    f"{_f(r['ratio'])} | {_f(r['ratio_median'])} | {_f(t.get('compile_s'), '{:.2f}')} | "
                    f"{_mib((r.get('memory') or {}).get('peak_bytes'))} | {_status(r)} |")
    return rows


def _training_rows(rs):
    head = ("| case | batch | steps/dispatch | devices | min ms | median ms | spread | examples/s | limit min ms | "
            "ratio | compile s | check | status |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rs:
        t, lim, ex = r.get("timing") or {}, r.get("limit") or {}, r.get("extra") or {}
        check = ""
        if "match" in ex:
            check = (f"max param diff {ex['max_abs_param_diff_vs_1_device']:.2g}, "
                     f"loss diff {ex['max_abs_loss_diff_vs_1_device']:.2g}: {'match' if ex['match'] else 'MISMATCH'}")
        rows.append(f"| {r['id']} | {_f(r['batch'], '{}')} | {_f(r['num_steps'], '{}')} | "
                    f"{(r.get('config') or {}).get('num_devices', 1)} | {_ms(t.get('min_s'))} | "
                    f"{_ms(t.get('median_s'))} | {_f(t.get('spread'), '{:.0%}')} | {_rate(r, 'examples_per_s')} | "
                    f"{_ms(lim.get('min_s'))} | {_f(r['ratio'])} | {_f(t.get('compile_s'), '{:.2f}')} | {check} | "
                    f"{_status(r)} |")
    return rows


def _likelihood_rows(rs):
    head = ("| case | batch | NFE | min ms | median ms | spread | examples/s | evals/s | forward-limit ratio | "
            "compile s | status |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rs:
        t = r.get("timing") or {}
        rows.append(f"| {r['id']} | {_f(r['batch'], '{}')} | {_f(r['nfe'], '{}')} | {_ms(t.get('min_s'))} | "
                    f"{_ms(t.get('median_s'))} | {_f(t.get('spread'), '{:.0%}')} | {_rate(r, 'examples_per_s')} | "
                    f"{_rate(r, 'evals_per_s')} | {_f(r['ratio'])} | {_f(t.get('compile_s'), '{:.2f}')} | "
                    f"{_status(r)} |")
    return rows


def _compile_rows(rs):
    head = "| case | steps | compile s by steps | growth | peak MiB by steps | memory B/step | status |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rs:
        ex = r.get("extra") or {}
        comp = ex.get("compile_s_by_steps") or {}
        mem = ex.get("peak_bytes_by_steps") or {}
        rows.append(f"| {r['id']} | {', '.join(comp)} | {', '.join(_f(v, '{:.2f}') for v in comp.values())} | "
                    f"{_f(ex.get('compile_growth'), '{:+.0%}')} | {', '.join(_mib(v) for v in mem.values())} | "
                    f"{_f(ex.get('peak_bytes_per_step'), '{:.0f}')} | {_status(r)} |")
    return rows


def _models_rows(rs):
    head = "| case | batch | fwd ms (min/med) | fwd+bwd ms (min/med) | compile s (fwd/bwd) | status |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rs:
        ex = r.get("extra") or {}
        rows.append(f"| {r['id']} | {_f(r['batch'], '{}')} | {_ms(ex.get('forward_min_s'))} / "
                    f"{_ms(ex.get('forward_median_s'))} | {_ms(ex.get('fwd_bwd_min_s'))} / {_ms(ex.get('fwd_bwd_median_s'))}"
                    f" | {_f(ex.get('forward_compile_s'), '{:.1f}')} / {_f(ex.get('fwd_bwd_compile_s'), '{:.1f}')} | "
                    f"{_status(r)} |")
    return rows


def _metrics_rows(rs):
    head = ("| case | batch | batches | devices | min ms | median ms | spread | images/s | limit images/s | ratio | "
            "first call s | status |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rs:
        t, lim, ex = r.get("timing") or {}, r.get("limit") or {}, r.get("extra") or {}
        rows.append(f"| {r['id']} | {_f(r['batch'], '{}')} | {_f(r['num_steps'], '{}')} | "
                    f"{(r.get('config') or {}).get('num_devices', 1)} | {_ms(t.get('min_s'))} | "
                    f"{_ms(t.get('median_s'))} | {_f(t.get('spread'), '{:.0%}')} | {_rate(r, 'images_per_s')} | "
                    f"{_rate(r, 'limit_images_per_s')} | {_f(r['ratio'])} | {_f(ex.get('first_call_s'), '{:.1f}')} | "
                    f"{_status(r)} |")
    return rows


def _loss_rows(rs):
    head = ("| case | batch | FD step min ms | autodiff step min ms | speedup (min) | speedup (median) | "
            "fwd+bwd limit ms | ratio | compile s (FD / autodiff) | status |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rs:
        t, lim, ex = r.get("timing") or {}, r.get("limit") or {}, r.get("extra") or {}
        ad = ex.get("autodiff_timing") or {}
        rows.append(f"| {r['id']} | {_f(r['batch'], '{}')} | {_ms(t.get('min_s'))} | {_ms(ad.get('min_s'))} | "
                    f"{_f(ex.get('speedup'), '{:.2f}')} | {_f(ex.get('speedup_median'), '{:.2f}')} | "
                    f"{_ms(lim.get('min_s'))} | {_f(r['ratio'])} | {_f(t.get('compile_s'), '{:.1f}')} / "
                    f"{_f(ad.get('compile_s'), '{:.1f}')} | {_status(r)} |")
    return rows


def _peer_rows(rs):
    head = ("| case | batch | steps | NFE (ours / peer) | ours min ms | peer min ms | ours / peer throughput | "
            "(medians) | bare net / ours | params (ours / peer) | peer | status |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rs:
        t, lim, c = r.get("timing") or {}, r.get("limit") or {}, r.get("config") or {}
        rows.append(f"| {r['id']} | {_f(r['batch'], '{}')} | {_f(r['num_steps'], '{}')} | "
                    f"{_f(r['nfe'], '{}')} / {_f(c.get('peer_nfe', r['nfe']), '{}')} | {_ms(t.get('min_s'))} | "
                    f"{_ms(lim.get('min_s'))} | {_f(r['ratio'], '{:.2f}')} | {_f(r['ratio_median'], '{:.2f}')} | "
                    f"{_f((r.get('extra') or {}).get('bare_over_ours'), '{:.2f}')} | "
                    f"{_f(c.get('params'), '{:,}')} / {_f(c.get('peer_params', c.get('params')), '{:,}')} | "
                    f"{c.get('peer', '–')} | {_status(r)} |")
    return rows


_GROUPS = [("sampling", "Sampling (ratio = limit time / sampler time, same NFE, batch and dtype)", _sampling_rows),
           ("training", "Training (ratio = bare forward+backward time / train-step time)", _training_rows),
           ("likelihood", "Likelihood", _likelihood_rows),
           ("compile", "Compile time and peak memory against the number of steps", _compile_rows),
           ("models", "Image score networks (benchmarks.models_bench)", _models_rows),
           ("metrics", "Feature extraction for FID/KID/IS (ratio = bare feature network / extract_features)",
            _metrics_rows),
           ("losses", "Losses: finite-difference vs autodiff train step (speedup = autodiff time / FD time)",
            _loss_rows),
           ("peers", "Peers: the same work in PyTorch libraries (ratio = peer time / our time: > 1, we are faster)",
            _peer_rows)]


def markdown(doc: dict) -> str:
    m = doc["machine"]
    v = m["versions"]
    lines = [f"# sde_jax benchmarks: suite `{doc['suite']}`", "",
             f"{m['date']} on `{m['host']}`: {m['backend']} ({m['device_kind']}, {m['device_count']} device(s)), "
             f"{m['cpus_usable']}/{m['cpu_count']} CPUs, {m['processor']}; load average at start "
             f"{doc.get('loadavg_start')}, at end {doc.get('loadavg_end')}. jax {v['jax']}, jaxlib {v['jaxlib']}, "
             f"flax {v['flax']}, optax {v['optax']}, diffrax {v['diffrax']}, equinox {v['equinox']}; commit "
             f"`{(m['git_commit'] or '?')[:12]}`{' (dirty tree)' if m['git_dirty'] else ''}. "
             f"Wall time {doc['wall_s']:.0f} s.", ""]
    for group, title, rows in _GROUPS:
        rs = [r for r in doc["records"] if r["group"] == group]
        if rs:
            lines += [f"## {title}", "", *rows(rs), ""]
    lines += ["## Targets", ""]
    for t in check_targets(doc["records"]):
        lines.append(f"- **{t['target']}** ({t['cases']} cases): {len(t['met'])} met"
                     + (f"; missed: {', '.join(f'`{i}` ({v})' for i, v in t['missed'])}" if t["missed"] else "")
                     + (f"; not reported: {', '.join(f'`{i}` ({s})' for i, s in t['not_reported'])}"
                        if t["not_reported"] else ""))
    return "\n".join(lines) + "\n"


def _median(values):
    ok = sorted(v for v in values if isinstance(v, float))
    if not ok:
        return None
    return ok[len(ok) // 2] if len(ok) % 2 else 0.5 * (ok[len(ok) // 2 - 1] + ok[len(ok) // 2])


def peer_summary(docs) -> str:
    """The README's peers table from one or more runs of the ``peers`` suite: per case, our and the peer's
    median (over runs) of the minimum times, the ratio peer / ours of each run and its median, our share of the
    bare network (VE PC cases) and the likelihood errors against the exact density (first run)."""
    docs = [docs] if isinstance(docs, dict) else list(docs)
    first, m = docs[0], docs[0]["machine"]
    runs = [{r["id"]: r for r in d["records"]} for d in docs]
    loads = ", ".join(str(d.get("loadavg_start", ["?"])[0]) for d in docs)
    lines = [f"Suite `peers`, {len(docs)} run(s) on {m['date'][:10]}, commit `{(m['git_commit'] or '?')[:12]}`: "
             f"{m['backend']}, {m['cpus_usable']} CPUs, 1-minute load at start {loads}. Times: median over the runs "
             f"of each run's minimum; ratio = peer time / our time (> 1: we are faster).", "",
             "| case | NFE (ours / peer) | ours ms | peer ms | ratio per run | median ratio | bare net / ours | "
             "abs. error of log p, mean (ours / peer) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in first["records"]:
        if r["group"] != "peers":
            continue
        same = [run.get(r["id"]) for run in runs]
        if r["status"] == "skipped":
            lines.append(f"| {r['id']} | – | – | – | skipped | – | – | – |")
            continue
        ok = [x for x in same if x and x["status"] == "ok"]
        ours = _median([x["timing"]["min_s"] for x in ok])
        peer = _median([x["limit"]["min_s"] for x in ok])
        per_run = " / ".join(_f(x["ratio"], "{:.2f}") if x and x["status"] == "ok" else (x or {}).get("status", "–")
                             for x in same)
        bare = _median([x["extra"].get("bare_over_ours") for x in ok if x.get("extra")])
        e = r.get("extra") or {}
        err = (f"{e['ours_abs_err_mean']:.1e} / {e['peer_abs_err_mean']:.1e}" if "ours_abs_err_mean" in e else "–")
        peer_nfe = (r.get("config") or {}).get("peer_nfe", e.get("peer_nfe", r["nfe"]))
        lines.append(f"| {r['id']} | {_f(r['nfe'], '{}')} / {_f(peer_nfe, '{}')} | "
                     f"{_f(ours and 1e3 * ours, '{:.1f}')} | {_f(peer and 1e3 * peer, '{:.1f}')} | {per_run} | "
                     f"{_f(_median([x['ratio'] for x in ok]), '{:.2f}')} | {_f(bare, '{:.2f}')} | {err} |")
    return "\n".join(lines) + "\n"


def summary(docs) -> str:
    """The compact table of the README's Performance section: one row per timed case; with several runs of
    the same suite (a list of documents), the ratio of each run and their median, since on a small shared
    machine one run's ratios move by +-0.1. Runs of the ``peers`` suite get :func:`peer_summary`."""
    docs = [docs] if isinstance(docs, dict) else list(docs)
    if docs[0].get("suite") == "peers":
        return peer_summary(docs)
    first, m = docs[0], docs[0]["machine"]
    runs = [{r["id"]: r for r in d["records"]} for d in docs]
    loads = ", ".join(str(d.get("loadavg_start", ["?"])[0]) for d in docs)
    lines = [f"Suite `{first['suite']}`, {len(docs)} run(s) on {m['date'][:10]}, commit `{(m['git_commit'] or '?')[:12]}`: "
             f"{m['backend']} ({m['device_kind']}), {m['cpus_usable']} CPUs, 1-minute load at start {loads}; "
             f"jax {m['versions']['jax']}. Time and throughput from the first run; `unstable`: spread over the "
             f"gate, not reported.", "",
             "| case | batch | steps | NFE | min ms | throughput | ratio per run | median ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in first["records"]:
        if r["group"] not in ("sampling", "training", "likelihood"):
            continue
        thr = r.get("throughput") or {}
        rate = next((f"{thr[k]:.3g} {unit}" for k, unit in (("samples_per_s", "samples/s"),
                                                             ("examples_per_s", "examples/s")) if k in thr), "–")
        t = r.get("timing") or {}
        same = [run.get(r["id"]) for run in runs]
        ratios = [x["ratio"] if x and x["status"] == "ok" else None for x in same]
        per_run = " / ".join(_f(v, "{:.2f}", x["status"] if x and x["status"] != "ok" else "–")
                             for v, x in zip(ratios, same))
        ok = sorted(v for v in ratios if isinstance(v, float))
        med = (ok[len(ok) // 2] if len(ok) % 2 else 0.5 * (ok[len(ok) // 2 - 1] + ok[len(ok) // 2])) if ok else None
        lines.append(f"| {r['id']} | {_f(r['batch'], '{}')} | {_f(r['num_steps'], '{}')} | {_f(r['nfe'], '{}')} | "
                     f"{_f(t.get('min_s') and 1e3 * t['min_s'], '{:.1f}')} | {rate} | {per_run} | "
                     f"{_f(med, '{:.2f}')} |")
    comp = [r for r in first["records"] if r["group"] == "compile"]
    if comp:
        steps = [int(k) for k in comp[0]["extra"]["compile_s_by_steps"]]
        growth = "; ".join(
            f"{r['entry_point']} " + " / ".join(_f((run.get(r["id"]) or {}).get("extra", {}).get("compile_growth"),
                                                   "{:+.0%}") for run in runs) for r in comp)
        lines += ["", f"Compile-time growth from {min(steps)} to {max(steps)} steps, per run: {growth}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Print the Markdown report (or the README summary) of a run.")
    ap.add_argument("json", nargs="+", help="benchmarks.json files written by python -m benchmarks.run "
                                            "(several runs of one suite: --summary shows each run's ratio)")
    ap.add_argument("--summary", action="store_true", help="the compact table of the README's Performance section")
    args = ap.parse_args()
    docs = []
    for path in args.json:
        with open(path) as f:
            docs.append(json.load(f))
    print(summary(docs) if args.summary else "\n".join(markdown(d) for d in docs), end="")
