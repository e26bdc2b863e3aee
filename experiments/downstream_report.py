"""The downstream study's numbers and reports: per-cell statistics over seeds, the
literature's expectations checked against them, and the markdown / JSON / PNG writers.

Pure functions of the run records that ``experiments/downstream_study.py`` collects (one dict
per run: stage, init, format, seed, status, flattened metrics, cost), so every sentence of the
report is computed from the results.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from pathlib import Path

from spatialav.configs import json_safe

TASKS = ("avc", "avsa", "avsa-objects")  # spatialav.pretrain --task
INITS = ("random", *TASKS)
INIT_LABELS = {"random": "random", "avc": "AVC", "avsa": "AVSA-viewpoints",
               "avsa-objects": "AVSA-objects"}
FORMATS = ("foa", "stereo", "mono")
PRETRAIN = "pretrain"  # the stage name of the pretraining runs


# Per head: (metric key in probe.json's metrics, flattened with '.'; label; higher is better).
# The first metric of a head is its primary one (plotted, and used for the expectations).
HEAD_METRICS = {
    "localise": (("auc", "map AUC", True), ("hit", "hit rate", True),
                 ("peak_error_deg", "peak error (deg)", False)),
    "seld": (("dcase2023.LE", "LE (deg)", False), ("dcase2023.F", "F", True),
             ("dcase2023.ER", "ER", False), ("dcase2023.SELD", "SELD score", False),
             ("adpit.skill", "ADPIT skill (1 - test loss / all-silent loss)", True)),
    "classify": (("mAP", "mAP", True), ("top1_accuracy", "top-1", True)),
    "supervised": (("dcase2023.F", "F", True), ("dcase2023.LE", "LE (deg)", False),
                   ("dcase2023.LR", "LR", True), ("dcase2023.ER", "ER", False),
                   ("dcase2023.SELD", "SELD score", False)),
    "separate": (("visual/different/si_sdri", "SI-SDRi (dB), visual query", True),
                 ("visual/different/si_sdr", "SI-SDR (dB), visual query", True)),
}
PRETRAIN_METRICS = (("avsa_probe", "AVSA probe (chance 0.5)"),
                    ("avc_retrieval", "AVC retrieval"), ("avc_chance", "AVC chance"))


# --- aggregation (pure) ------------------------------------------------------------------------


def flatten(d: dict, prefix: str = "", intervals: bool = False) -> dict:
    """Numeric leaves of a nested dict as {'a.b': value} (lists and strings dropped), or with
    ``intervals`` its [lo, hi] leaves (a probe's ``ci95``) as {'a.b': [lo, hi]}."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + ".", intervals))
        elif intervals:
            if isinstance(v, list) and len(v) == 2:
                out[key] = v
        elif isinstance(v, int | float):
            out[key] = float(v)
        elif v is None:  # a NaN written as null
            out[key] = math.nan
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for fewer than two values); NaN values
    (a metric undefined for a run) are left out."""
    xs = [v for v in values if not math.isnan(v)]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, math.nan
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def cells(records: list[dict], stage: str, metric: str) -> dict[tuple[str, str], list[float]]:
    """{(init, format): per-seed values} of one metric of one stage's finished runs."""
    out: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if r["stage"] == stage and r["status"] == "done" and metric in r["metrics"]:
            out.setdefault((r["init"], r["format"]), []).append(r["metrics"][metric])
    return out


def compare(a: list[float], b: list[float], higher_better: bool, strict: bool) -> dict:
    """Is ``a`` better than ``b`` (``strict``) or at least as good? Judged against the pooled
    seed std ``sqrt((sa^2 + sb^2) / 2)``: a gap within it is noise.

    Returns ``{'verdict', 'gap', 'noise'}``; ``gap`` > 0 means ``a`` is better. Verdicts:
    'holds' (better by more than the noise), 'holds (equal within noise)' (a >= claim with a gap
    inside the noise), 'within noise' (a > claim with a gap inside the noise), 'does not hold'
    (worse by more than the noise), 'no data'. With one seed per side there is no noise
    estimate and only the sign counts ('holds' / 'does not hold', noise NaN).
    """
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if math.isnan(ma) or math.isnan(mb):
        return {"verdict": "no data", "gap": math.nan, "noise": math.nan}
    gap = (ma - mb) if higher_better else (mb - ma)
    noise = math.sqrt((sa ** 2 + sb ** 2) / 2) if not (math.isnan(sa) or math.isnan(sb)) \
        else math.nan
    if math.isnan(noise):
        ok = gap > 0 if strict else gap >= 0
        verdict = "holds" if ok else "does not hold"
    elif gap > noise:
        verdict = "holds"
    elif gap < -noise:
        verdict = "does not hold"
    else:
        verdict = "within noise" if strict else "holds (equal within noise)"
    return {"verdict": verdict, "gap": gap, "noise": noise}


def expectations(records: list[dict]) -> list[dict]:
    """The literature's expectations, checked on every (head, format) or (head, init) where
    both sides were measured: AVSA >= AVC > random on localisation (Morgado et al. 2020, Wang
    et al. 2022) and FOA > stereo > mono on localisation. Judged on the localisation maps'
    primary metric, and on SELD's localisation error where the grid has the cells."""
    claims = [("AVSA-viewpoints >= AVC", "init", "avsa", "avc", False),
              ("AVSA-objects >= AVC", "init", "avsa-objects", "avc", False),
              ("AVC > random", "init", "avc", "random", True),
              ("FOA > stereo", "format", "foa", "stereo", True),
              ("stereo > mono", "format", "stereo", "mono", True)]
    out = []
    for stage in ("localise", "seld"):
        metric, label, higher = HEAD_METRICS[stage][0]
        data = cells(records, stage, metric)
        inits = sorted({i for i, _ in data}, key=INITS.index)
        fmts = sorted({f for _, f in data}, key=FORMATS.index)
        for claim, axis, a, b, strict in claims:
            for other in (fmts if axis == "init" else inits):
                ka, kb = ((a, other), (b, other)) if axis == "init" else ((other, a), (other, b))
                if ka not in data or kb not in data:
                    continue
                res = compare(data[ka], data[kb], higher, strict)
                where = f"{other}" if axis == "init" else INIT_LABELS[other]
                out.append({"claim": claim, "axis": axis, "stage": stage, "metric": metric,
                            "label": label,
                            "where": where, "a": ka, "b": kb, **res,
                            "mean_a": mean_std(data[ka])[0], "mean_b": mean_std(data[kb])[0]})
    return out


def likely_cause(e: dict, pretrain: dict[tuple[str, str], dict[str, float]]) -> str:
    """One line on why an expectation failed or was not resolved, from the numbers at hand:
    the seed noise, and whether the pretraining learned its pretext task at all."""
    if e["verdict"] in ("holds", "holds (equal within noise)", "no data"):
        return ""
    if e["verdict"] == "within noise":
        return (f"the gap ({e['gap']:.3g}) is within one pooled std of the seeds "
                f"({e['noise']:.3g}): more seeds or more steps are needed to resolve it")
    lines = []
    for init, fmt in (e["a"], e["b"]):
        p = pretrain.get((init, fmt))
        if init == "random" or p is None:
            continue
        if init.startswith("avsa") and "avsa_probe" in p:
            learned = p["avsa_probe"] > 0.55
            lines.append(f"{INIT_LABELS[init]} ({fmt}) pretraining reached AVSA probe "
                         f"{p['avsa_probe']:.2f} (chance 0.50)"
                         + ("" if learned else ": it barely learned its pretext task"))
        elif init == "avc" and "avc_retrieval" in p:
            ratio = p["avc_retrieval"] / max(p.get("avc_chance", math.nan), 1e-9)
            lines.append(f"AVC ({fmt}) pretraining reached retrieval {p['avc_retrieval']:.3f} "
                         f"({ratio:.1f}x chance)"
                         + (": it barely learned its pretext task" if ratio < 1.5 else ""))
    noise = (" (one seed: no noise estimate)" if math.isnan(e["noise"])
             else f" (seed std {e['noise']:.3g})")
    base = (f"reversed by {-e['gap']:.3g}{noise}: the pretraining budget is likely too short "
            "for the pretext task to shape directional features, or the head does not read "
            "them out" if e["axis"] == "init" else
            f"reversed by {-e['gap']:.3g}{noise}: the encoder did not exploit the extra spatial "
            "channels at this budget (mono is the omni W, so its maps can only follow the "
            "visual crops)")
    return base + ("; " + "; ".join(lines) if lines else "")


# The supervised SELD reference's goals (issue: downstream evaluation): on the test split, per
# probe seed trained from scratch in at most 30 min on 2 CPU cores.
SUPERVISED_GOALS = (("dcase2023.F", ">=", 0.50), ("dcase2023.LE", "<=", 20.0))
SUPERVISED_BUDGET_S = 30 * 60


def supervised(records: list[dict]) -> dict | None:
    """The supervised reference run's figures: every metric's mean over its probe seeds with
    the 95 % bootstrap interval over the test clips, each seed's own value and training time,
    and each goal checked (None before the run finished)."""
    done = [r for r in records if r["stage"] == "supervised" and r["status"] == "done"]
    if not done:
        return None
    r = done[0]
    metrics = {m: {"mean": r["metrics"].get(m, math.nan), "ci95": r.get("ci95", {}).get(m)}
               for m, _, _ in HEAD_METRICS["supervised"]}
    goals = [{"metric": m, "goal": f"{op} {v:g}", "mean": r["metrics"].get(m, math.nan),
              "met": (r["metrics"].get(m, math.nan) >= v if op == ">="
                      else r["metrics"].get(m, math.nan) <= v)} for m, op, v in SUPERVISED_GOALS]
    train = r.get("train", [])
    seconds = [t["seconds"] for t in train]
    goals.append({"metric": "training seconds per seed (max)",
                  "goal": f"<= {SUPERVISED_BUDGET_S}", "mean": max(seconds, default=math.nan),
                  "met": bool(seconds) and max(seconds) <= SUPERVISED_BUDGET_S})
    return {"workdir": r["workdir"], "clips": r["metrics"].get("clips"), "metrics": metrics,
            "train": train, "goals": goals, "cost": r.get("cost"),
            "command": (r.get("cost") or {}).get("command")}


def supervised_lines(sup: dict | None) -> list[str]:
    if sup is None:
        return []
    m = sup["metrics"]
    lines = ["## Supervised SELD reference (random init, trained end to end)", "",
             f"`{sup['command']}`" if sup["command"] else "", "",
             f"Test split, {sup['clips']:.0f} clips; mean over {len(sup['train'])} probe seeds "
             "[95 % bootstrap interval over the clips]. DCASE 2023 metrics (F and LE at 20 deg).",
             "", "| metric | value | goal | met |", "|---|---:|---|---|"]
    goals = {g["metric"]: g for g in sup["goals"]}
    for key, label, _ in HEAD_METRICS["supervised"]:
        ci = m[key]["ci95"]
        g = goals.get(key)
        lines.append(f"| {label} | {m[key]['mean']:.3f}"
                     + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + " | "
                     + (f"{g['goal']} | {'yes' if g['met'] else 'no'}" if g else "- | -") + " |")
    g = goals["training seconds per seed (max)"]
    per = ", ".join(f"seed {t['seed']}: {t['step']} steps in {_dur(t['seconds'])}"
                    for t in sup["train"])
    lines += ["", f"Training (each seed from scratch, its evaluation included): {per}; "
              f"goal {_dur(SUPERVISED_BUDGET_S)} per seed: {'met' if g['met'] else 'not met'} "
              "(see the compute-cost table for the machine's load).", ""]
    return lines


# --- reports -----------------------------------------------------------------------------------


def _fmt(values: list[float]) -> str:
    m, s = mean_std(values)
    if math.isnan(m):
        return "n/a"
    digits = 1 if abs(m) >= 10 else 3
    return f"{m:.{digits}f}" + ("" if math.isnan(s) else f" ± {s:.{digits}f}") + \
        f" ({len(values)})"


def cost_table(records: list[dict]) -> tuple[list[str], dict]:
    """Per stage and in total: runs, wall and CPU seconds, mean machine load during the runs."""
    stages: dict[str, dict] = {}
    for r in records:
        c = r.get("cost")
        if not c:
            continue
        s = stages.setdefault(r["stage"], {"runs": 0, "wall_s": 0.0, "cpu_s": 0.0, "load": []})
        s["runs"] += 1
        s["wall_s"] += c["wall_s"]
        s["cpu_s"] += c["cpu_s"]
        s["load"].append(c["load_mean"])
    total = {"runs": sum(s["runs"] for s in stages.values()),
             "wall_s": sum(s["wall_s"] for s in stages.values()),
             "cpu_s": sum(s["cpu_s"] for s in stages.values()),
             "load": [v for s in stages.values() for v in s["load"]]}
    lines = ["| stage | runs | wall | CPU (user + sys) | CPU / wall | mean load (1 min) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, s in [*stages.items(), ("**total**", total)]:
        load = sum(s["load"]) / len(s["load"]) if s["load"] else math.nan
        ratio = s["cpu_s"] / s["wall_s"] if s["wall_s"] else math.nan
        lines.append(f"| {name} | {s['runs']} | {_dur(s['wall_s'])} | {_dur(s['cpu_s'])} | "
                     f"{ratio:.2f} | {load:.1f} |")
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "load"}
               for k, v in [*stages.items(), ("total", total)]}
    return lines, summary


def _dur(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def write_markdown(path: Path, study: dict):
    preset, records = study["preset"], study["runs"]
    lines = [f"# Downstream study, preset `{preset['name']}`", "", "```",
             study["command"], "```", "",
             f"Written {study['written']} by `experiments/downstream_study.py`. "
             f"Covers: {preset['covers']}.", "",
             "Each cell: mean ± sample std over seeds (number of seeds). Rows: the encoders' "
             "initialisation (random, or pretrained with `python -m spatialav.pretrain --task "
             "avc | avsa | avsa-objects` on the same input format); columns: the audio input "
             f"format. Pretraining: `{preset['pretrain_config']}` model, "
             f"{preset['pretrain_steps']} steps; probes: `{preset['probe_config']}` probe "
             f"preset, frozen encoders. Seeds {list(preset['seeds'])}.", ""]
    for note in study["notes"]:
        lines += [f"**Note:** {note}", ""]
    for stage, metrics in study["tables"].items():
        if stage == "supervised":  # one random-init run: its own section below
            continue
        for metric, label, higher in metrics:
            data = cells(records, stage, metric)
            fmts = [f for f in FORMATS if any(k[1] == f for k in data)]
            if not fmts:
                continue
            arrow = "higher is better" if higher else "lower is better"
            lines += [f"## {stage}: {label} ({arrow})", "",
                      "| init | " + " | ".join(fmts) + " |", "|---" * (len(fmts) + 1) + "|"]
            for init in preset["inits"]:  # n/a: not finished (yet), see the runs' status
                lines.append(f"| {INIT_LABELS[init]} | "
                             + " | ".join(_fmt(data.get((init, f), [])) for f in fmts) + " |")
            lines.append("")
    lines += supervised_lines(study["supervised"])
    lines += ["## Expectations from the literature", "",
              "AVSA (viewpoints: Morgado et al., NeurIPS 2020; objects: Wang et al., IEEE JSTSP "
              "2022) should give encoders at least as good as AVC, and both better than random, "
              "for localisation; FOA should localise better than stereo, and stereo better than "
              "mono. Checked on each head's localisation metric (the maps' AUC, SELD's LE); a "
              "gap counts only if it exceeds the pooled std of the seeds.", ""]
    exp = study["expectations"]
    if not exp:
        lines += ["No comparisons yet (cells missing).", ""]
    else:
        held = sum(e["verdict"].startswith("holds") for e in exp)
        lines += [f"{held} of {len(exp)} comparisons hold.", "",
                  "| claim | head: metric | where | a vs b | verdict | likely cause |",
                  "|---|---|---|---|---|---|"]
        for e in exp:
            lines.append(f"| {e['claim']} | {e['stage']}: {e['label']} | {e['where']} | "
                         f"{e['mean_a']:.3g} vs {e['mean_b']:.3g} | {e['verdict']} | "
                         f"{e['cause'] or '-'} |")
        lines.append("")
    if study["pretrain_table"]:
        lines += ["## Pretraining (validation at the last step)", "",
                  "| task | format | " + " | ".join(lb for _, lb in PRETRAIN_METRICS) + " |",
                  "|---|---|" + "---|" * len(PRETRAIN_METRICS)]
        lines += study["pretrain_table"] + [""]
    cost_lines, _ = cost_table(records)
    m = study["machine"]
    lines += ["## Compute cost", "",
              f"Machine: {m['cpu_model']}, {m['cpus']} CPUs visible, {m['memory_gb']:.0f} GB; "
              f"{m['platform']}; Python {m['python']}, jax {m['jax']}. Load average "
              f"(1/5/15 min) at the start of this invocation {m['load_start']}, at its end "
              f"{m['load_end']}; the table's load is the mean 1-minute load sampled during each "
              "stage's runs (a load above the CPU count means other work shared the machine "
              "and stretched the wall times).", ""]
    lines += cost_lines
    inv = study["invocation"]
    lines += ["", f"This invocation: {inv['executed']} runs executed, {inv['skipped']} "
              f"finished ones reused, {inv['failed']} failed; {_dur(inv['wall_s'])} wall. "
              "Wall and CPU per stage add up every run's own record, whichever invocation "
              "ran it.", "", f"Raw per-seed numbers: `{study['json_name']}`"
              + (f"; plot: `{study['png_name']}`." if study["png_name"] else "."), ""]
    path.write_text("\n".join(lines))


def write_plot(path: Path, study: dict) -> str | None:
    """Primary metric of every head (plus the maps' peak error) per init x format, error bars =
    seed std. Returns why there is no plot (no init x format table; matplotlib missing), or
    None when it was written."""
    if not any(stage != "supervised" for stage in study["tables"]):
        return "no plot: the study has no init x format table (only the supervised reference)"
    try:
        import matplotlib
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e '.[test]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = study["runs"]
    panels = [(stage, *metrics[0]) for stage, metrics in study["tables"].items()
              if stage != "supervised"]
    if "localise" in study["tables"]:
        panels.insert(1, ("localise", *study["tables"]["localise"][2]))
    panels = [p for p in panels if cells(records, p[0], p[1])] or panels[:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (stage, metric, label, higher) in zip(axes[0], panels, strict=True):
        data = cells(records, stage, metric)
        fmts = [f for f in FORMATS if any(k[1] == f for k in data)]
        inits = [i for i in INITS if any(k[0] == i for k in data)]
        width = 0.8 / max(len(inits), 1)
        for j, init in enumerate(inits):
            stats = [mean_std(data.get((init, f), [])) for f in fmts]
            xs = [i + (j - (len(inits) - 1) / 2) * width for i in range(len(fmts))]
            ax.bar(xs, [s[0] for s in stats], width,
                   yerr=[0 if math.isnan(s[1]) else s[1] for s in stats], capsize=3,
                   label=INIT_LABELS[init])
        if metric == "auc":
            ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)  # chance
        ax.set_xticks(range(len(fmts)), fmts)
        ax.set_title(f"{stage}: {label}\n({'higher' if higher else 'lower'} is better)",
                     fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"downstream study, preset {study['preset']['name']} (mean ± std over seeds)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def machine(load_start) -> dict:
    from importlib import metadata

    model, mem = platform.processor() or platform.machine(), math.nan
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    try:
        jax_version = metadata.version("jax")
    except metadata.PackageNotFoundError:
        jax_version = "?"
    return {"cpu_model": model, "cpus": len(os.sched_getaffinity(0)), "memory_gb": mem,
            "platform": platform.platform(), "python": platform.python_version(),
            "jax": jax_version, "load_start": _loads(load_start),
            "load_end": _loads(os.getloadavg())}


def _loads(x) -> str:
    return " / ".join(f"{v:.1f}" for v in x)


def write_reports(out: Path, preset: dict, heads: list[str], records: list[dict], command: str,
                  notes: list[str], invocation: dict, load_start) -> dict:
    """Write ``out``.md, .json and .png from the run records; returns the study dict (what the
    JSON holds). ``preset``: the study preset as a dict; ``heads``: the heads of its tables."""
    pre = {}
    for r in records:
        if r["stage"] == PRETRAIN and r["status"] == "done":
            pre.setdefault((r["init"], r["format"]), []).append(r["metrics"])
    pre_mean = {k: {m: mean_std([v.get(m, math.nan) for v in vs])[0] for m, _ in
                    PRETRAIN_METRICS} for k, vs in pre.items()}
    pre_rows = [f"| {INIT_LABELS[t]} | {f} | " + " | ".join(
        _fmt([v.get(m, math.nan) for v in pre[(t, f)]]) for m, _ in PRETRAIN_METRICS) + " |"
        for t in TASKS for f in FORMATS if (t, f) in pre]
    exp = expectations(records)
    for e in exp:
        e["cause"] = likely_cause(e, pre_mean)
    _, cost = cost_table(records)
    study = {
        "preset": preset,
        "command": command,
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
        "notes": notes,
        "tables": {h: HEAD_METRICS[h] for h in heads},
        "runs": records,
        "expectations": exp,
        "pretrain_table": pre_rows,
        "supervised": supervised(records),
        "cost": cost,
        "machine": machine(load_start),
        "invocation": invocation,
        "json_name": out.name + ".json", "png_name": out.name + ".png",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    why = write_plot(out.with_suffix(".png"), study)
    if why:
        study["notes"].append(why)
        study["png_name"] = None
        out.with_suffix(".png").unlink(missing_ok=True)  # an older study's plot would mislead
    write_markdown(out.with_suffix(".md"), study)
    for e in exp:  # JSON keys: tuples to lists
        e["a"], e["b"] = list(e["a"]), list(e["b"])
    out.with_suffix(".json").write_text(json.dumps(json_safe(study), indent=2))
    return study
