"""The downstream study (experiments/downstream_study.py): its statistics and verdicts on
hand-computed cases, its plan, its work-directory guard, and the `micro` preset end to end
(reports written, every cell filled, a rerun skips every run)."""

import dataclasses
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import downstream_report as rep
import downstream_study as ds
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "downstream_study.py"


def test_mean_std_is_the_sample_std_and_skips_nan():
    m, s = rep.mean_std([1.0, 2.0, 3.0, math.nan])
    assert m == 2.0 and s == pytest.approx(1.0)  # sqrt(((1-2)^2 + 0 + (3-2)^2) / 2)
    m, s = rep.mean_std([5.0])
    assert m == 5.0 and math.isnan(s)
    assert all(math.isnan(v) for v in rep.mean_std([math.nan]))


def test_compare_judges_gaps_against_the_pooled_seed_std():
    # means 0.81 vs 0.61, stds 0.01414 each: gap 0.2 >> noise
    assert rep.compare([0.80, 0.82], [0.60, 0.62], True, strict=True)["verdict"] == "holds"
    # lower is better flips the sign
    assert rep.compare([0.80, 0.82], [0.60, 0.62], False, True)["verdict"] == "does not hold"
    # gap 0.01, stds 0.1414 each: within noise; a >= claim then holds, a > claim is unresolved
    a, b = [0.6, 0.8], [0.59, 0.79]
    r = rep.compare(a, b, True, strict=True)
    assert r["verdict"] == "within noise"
    assert r["gap"] == pytest.approx(0.01) and r["noise"] == pytest.approx(math.sqrt(0.02))
    assert rep.compare(a, b, True, strict=False)["verdict"] == "holds (equal within noise)"
    # one seed per side: no noise estimate, the sign decides
    r = rep.compare([0.5], [0.4], True, strict=True)
    assert r["verdict"] == "holds" and math.isnan(r["noise"])
    assert rep.compare([0.5], [0.5], True, strict=True)["verdict"] == "does not hold"
    assert rep.compare([0.5], [0.5], True, strict=False)["verdict"] == "holds"
    assert rep.compare([], [0.5], True, strict=True)["verdict"] == "no data"


def _rec(stage, init, fmt, seed, **metrics):
    return {"stage": stage, "init": init, "format": fmt, "seed": seed, "status": "done",
            "metrics": metrics}


def test_expectations_are_computed_from_the_numbers():
    auc = {("random", "foa"): [0.50, 0.52], ("avc", "foa"): [0.60, 0.62],
           ("avsa", "foa"): [0.70, 0.72], ("avsa-objects", "foa"): [0.55, 0.57],
           ("random", "stereo"): [0.45, 0.47], ("random", "mono"): [0.49, 0.51]}
    records = [_rec("localise", i, f, s, auc=v) for (i, f), vs in auc.items()
               for s, v in enumerate(vs)]
    records.append({**_rec("localise", "avc", "mono", 0, auc=0.9), "status": "failed"})
    exp = {(e["claim"], e["where"]): e for e in rep.expectations(records)}
    assert exp[("AVSA-viewpoints >= AVC", "foa")]["verdict"] == "holds"
    assert exp[("AVSA-objects >= AVC", "foa")]["verdict"] == "does not hold"
    assert exp[("AVC > random", "foa")]["verdict"] == "holds"
    assert exp[("FOA > stereo", "random")]["verdict"] == "holds"
    assert exp[("stereo > mono", "random")]["verdict"] == "does not hold"
    assert ("AVC > random", "mono") not in exp  # the failed run is no data
    assert not any(e["stage"] == "seld" for e in exp.values())
    # the likely cause of a failure names the pretraining's own validation numbers
    cause = rep.likely_cause(exp[("AVSA-objects >= AVC", "foa")],
                            {("avsa-objects", "foa"): {"avsa_probe": 0.51},
                             ("avc", "foa"): {"avc_retrieval": 0.02, "avc_chance": 0.005}})
    assert "reversed by 0.05" in cause and "0.51" in cause and "barely learned" in cause
    assert "4.0x chance" in cause and cause.count("barely learned") == 1
    assert rep.likely_cause(exp[("AVC > random", "foa")], {}) == ""


def test_cpu_plan_has_the_full_localisation_grid_and_pretrains_before_probing():
    preset = ds.cpu()
    runs = ds.plan(preset, preset.heads)
    pretrain = [r for r in runs if r.stage == rep.PRETRAIN]
    assert len(pretrain) == 3 * 3 * len(preset.seeds) == len(set(pretrain))
    loc = {(r.init, r.fmt, r.seed) for r in runs if r.stage == "localise"}
    assert loc == {(i, f, s) for i in rep.INITS for f in rep.FORMATS for s in preset.seeds}
    assert len(preset.seeds) >= 2
    position = {r: k for k, r in enumerate(runs)}
    for r in runs:
        pre = r.pretrain_run()
        if pre is not None:
            assert position[pre] < position[r]


def test_probe_command_loads_its_own_pretraining_run(tmp_path):
    preset = ds.cpu()
    head = preset.heads[0]
    run = ds.Run("localise", "avsa", "stereo", 1)
    cmd = ds.command(run, preset, head, tmp_path, "/data")
    i = cmd.index("--init")
    assert cmd[i + 1] == str(tmp_path / "pretrain" / "avsa-stereo-s1")
    assert cmd[cmd.index("--format") + 1] == "stereo"
    assert cmd[cmd.index("--workdir") + 1] == str(tmp_path / "localise" / "avsa-stereo-s1")
    assert "train.seed=1" in cmd and "data.root=/data" in cmd
    rnd = ds.command(ds.Run("seld", "random", "foa", 0), preset, preset.heads[1], tmp_path, None)
    assert rnd[rnd.index("--init") + 1] == "random" and not any("data.root" in a for a in rnd)


def test_supervised_reference_is_one_random_init_finetuning_run_scored_against_its_goals(
        tmp_path):
    preset = ds.cpu()
    runs = ds.plan(preset, (ds.SUPERVISED,))
    assert runs == [ds.Run("supervised", "random", "foa", 0)]  # no pretraining, one seed
    cmd = ds.command(runs[0], preset, ds.SUPERVISED, tmp_path, None)
    assert cmd[cmd.index("--head") + 1] == "seld" and cmd[cmd.index("--config") + 1] == "seld"
    assert "--finetune" in cmd and cmd[cmd.index("--init") + 1] == "random"
    assert ds.SUPERVISED in preset.heads
    # a probe.json as the runner writes it: the record carries the CIs and the seeds' timings
    d = runs[0].workdir(tmp_path)
    d.mkdir(parents=True)
    (d / "probe.json").write_text(json.dumps({
        "metrics": {"dcase2023": {"F": 0.52, "LE": 19.0, "LR": 0.6, "ER": 0.5, "SELD": 0.4},
                    "clips": 400},
        "ci95": {"dcase2023": {"F": [0.49, 0.55], "LE": [18.0, 20.5], "LR": [0.5, 0.7],
                               "ER": [0.4, 0.6], "SELD": [0.3, 0.5]}},
        "train": [{"seed": 0, "step": 12000, "seconds": 1500.0},
                  {"seed": 1, "step": 12000, "seconds": 1900.0}]}))
    rec = ds.collect(runs, tmp_path, {runs[0]: "done"})
    sup = rep.supervised(rec)
    assert sup["metrics"]["dcase2023.F"] == {"mean": 0.52, "ci95": [0.49, 0.55]}
    met = {g["metric"]: g["met"] for g in sup["goals"]}
    assert met == {"dcase2023.F": True, "dcase2023.LE": True,
                   "training seconds per seed (max)": False}  # seed 1 took 31.7 min
    text = "\n".join(rep.supervised_lines(sup))
    assert "0.520 [0.490, 0.550]" in text and "not met" in text
    assert rep.supervised(ds.collect(runs, tmp_path, {})) is None  # pending: nothing to report
    # A study of the reference alone: its section and JSON key, and no plot (nothing to draw;
    # a plot an older study left there is removed rather than left to mislead).
    out = tmp_path / "results" / "downstream"
    out.parent.mkdir()
    out.with_suffix(".png").write_bytes(b"old")
    study = rep.write_reports(out, json.loads(json.dumps(dataclasses.asdict(preset))),
                              ["supervised"], rec, "cmd", [],
                              {"executed": 1, "skipped": 0, "failed": 0, "wall_s": 1.0},
                              (0.0, 0.0, 0.0))
    assert not out.with_suffix(".png").exists() and study["png_name"] is None
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["supervised"]["metrics"]["dcase2023.LE"] == {"mean": 19.0, "ci95": [18.0, 20.5]}
    md = out.with_suffix(".md").read_text()
    assert "## Supervised SELD reference" in md and "no init x format table" in md


def test_work_directory_refuses_other_settings_but_takes_new_heads(tmp_path):
    preset = ds.micro()
    ds.check_study_dir(tmp_path, ds.study_identity(preset, None))
    more = dataclasses.replace(preset, heads=(*preset.heads, preset.extra_heads[0]))
    ds.check_study_dir(tmp_path, ds.study_identity(more, None))  # adding a head is fine
    saved = json.loads((tmp_path / "study.json").read_text())
    assert set(saved["heads"]) == {"localise", "seld", "classify"}
    longer = dataclasses.replace(preset, pretrain_steps=3)
    with pytest.raises(SystemExit, match="other settings"):
        ds.check_study_dir(tmp_path, ds.study_identity(longer, None))
    with pytest.raises(SystemExit, match="has no head"):
        ds.select_heads(preset, "localise,nope")


def test_a_run_is_done_only_when_its_training_finished_unpreempted(tmp_path):
    preset = ds.micro()  # 2 pretraining steps
    pre, seld, loc = (ds.Run(ds.PRETRAIN, "avsa", "foa", 0), ds.Run("seld", "avsa", "foa", 0),
                      ds.Run("localise", "avsa", "foa", 0))

    def write(run, name, data):
        path = run.workdir(tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))

    assert not ds.is_done(pre, tmp_path, preset)
    write(pre, "summary.json", {"step": 1, "preempted": False})
    assert not ds.is_done(pre, tmp_path, preset)  # an earlier, shorter budget
    write(pre, "summary.json", {"step": 2, "preempted": True})
    assert not ds.is_done(pre, tmp_path, preset)
    write(pre, "summary.json", {"step": 2, "preempted": False})
    assert ds.is_done(pre, tmp_path, preset)
    # a SIGTERM'd probe still writes probe.json after its preempted training
    write(seld, "probe.json", {"metrics": {}})
    assert not ds.is_done(seld, tmp_path, preset)
    write(seld, "seed0/summary.json", {"step": 2, "preempted": False})
    write(seld, "seed1/summary.json", {"step": 1, "preempted": True})
    assert not ds.is_done(seld, tmp_path, preset)  # one probe seed's head was preempted
    write(seld, "seed1/summary.json", {"step": 2, "preempted": False})
    assert ds.is_done(seld, tmp_path, preset)
    write(loc, "probe.json", {"metrics": {}})  # localisation trains nothing
    assert ds.is_done(loc, tmp_path, preset)


def test_execute_records_cpu_time_over_attempts(tmp_path):
    run = ds.Run("localise", "random", "foa", 0)
    burn = [sys.executable, "-c", "import time\nt = time.process_time()\n"
            "while time.process_time() - t < 0.3: pass\nprint('hi')"]
    first = ds.execute(run, burn, tmp_path, {}, None)
    assert first["rc"] == 0 and first["attempts"] == 1 and first["cpu_s"] >= 0.3
    assert first["wall_s"] >= first["cpu_s"] * 0.5
    second = ds.execute(run, [sys.executable, "-c", "raise SystemExit(3)"], tmp_path, {}, None)
    assert second["rc"] == 3 and second["attempts"] == 2 and second["cpu_s"] >= first["cpu_s"]
    assert "hi" in (run.workdir(tmp_path) / ds.LOG).read_text()
    assert json.loads((run.workdir(tmp_path) / ds.RECORD).read_text()) == second


@pytest.mark.parametrize("name", list(ds.PRESETS))
def test_every_preset_builds_valid_pretrain_and_probe_configs(name):
    """Each --set of each preset names a real config field (a typo would fail only mid-study)."""
    from spatialav import configs
    from spatialav.downstream import config as probe_configs

    preset = ds.PRESETS[name]()
    for task in rep.TASKS:
        cfg = configs.get_config(preset.pretrain_config, task=task, fmt="mono",
                                 overrides=[*preset.pretrain_overrides, "train.seed=1"])
        assert cfg.model.audio_fmt == "mono" and cfg.train.seed == 1
    for head in (*preset.heads, *preset.extra_heads):
        cfg = probe_configs.get_config(head.config or preset.probe_config, task=head.probe,
                                       fmt=head.formats[0], finetune=head.finetune,
                                       overrides=head.overrides)
        assert cfg.model_preset == preset.pretrain_config  # random encoders match pretrained
        if head.probe == "separate":
            assert cfg.separation.mix.query_kinds == ("visual",)


def test_flatten_keeps_numbers_and_nulls():
    flat = rep.flatten({"dcase2023": {"LE": 20, "F": 0.5}, "maps": ["a.png"], "x": None})
    assert flat["dcase2023.LE"] == 20.0 and flat["dcase2023.F"] == 0.5
    assert "maps" not in flat and math.isnan(flat["x"])


def _study(tmp_path, root):
    cmd = [sys.executable, str(SCRIPT), "--preset", "micro", "--workdir",
           str(tmp_path / "work"), "--out", str(tmp_path / "out" / "study"),
           "--data-root", str(root)]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout, time.time() - t0


@pytest.mark.slow
def test_micro_study_end_to_end_then_rerun_skips_everything(tiny_root, tmp_path):
    out, _ = _study(tmp_path, tiny_root)
    preset = ds.micro()
    runs = ds.plan(preset, preset.heads)
    assert out.count(": done in") == len(runs)
    study = json.loads((tmp_path / "out" / "study.json").read_text())
    md = (tmp_path / "out" / "study.md").read_text()
    png = (tmp_path / "out" / "study.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # every planned run is reported, finished, with its head's primary metric and its cost
    assert len(study["runs"]) == len(runs)
    for r in study["runs"]:
        assert r["status"] == "done" and r["cost"]["cpu_s"] > 0 and r["cost"]["wall_s"] > 0
        if r["stage"] != rep.PRETRAIN:
            assert math.isfinite(r["metrics"][rep.HEAD_METRICS[r["stage"]][0][0]])
    # every cell of every table has a value, and the md says how it was made and what it cost
    rows = [ln for ln in md.splitlines()
            if any(ln.startswith(f"| {label} |") for label in rep.INIT_LABELS.values())]
    tables = sum(len(rep.HEAD_METRICS[h.head]) for h in preset.heads)
    assert len(rows) == tables * len(rep.INITS) + 3  # + the pretraining table's rows
    assert not any("n/a" in ln for ln in rows)
    assert "--preset micro" in md and "## Compute cost" in md and "**total**" in md
    assert "comparisons hold" in md and study["expectations"]
    assert {e["verdict"] for e in study["expectations"]} <= {"holds", "does not hold"}
    assert study["cost"]["total"]["runs"] == len(runs)

    out2, wall = _study(tmp_path, tiny_root)  # the rerun reuses every finished run
    assert "running" not in out2 and f"'skipped': {len(runs)}" in out2
    assert wall < 30
    again = json.loads((tmp_path / "out" / "study.json").read_text())
    assert again["invocation"]["executed"] == 0
    assert [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in study["runs"]]

    # A new machine: the work directory is gone, the ledger beside the report (committed) is
    # not. Nothing runs again and the report is the same, costs included.
    ledger = tmp_path / "out" / "study_runs"
    assert len(list(ledger.glob("*/*.json"))) == len(runs)
    shutil.rmtree(tmp_path / "work")
    out3, _ = _study(tmp_path, tiny_root)
    assert "running" not in out3 and f"'skipped': {len(runs)}" in out3
    third = json.loads((tmp_path / "out" / "study.json").read_text())
    assert [r["metrics"] for r in third["runs"]] == [r["metrics"] for r in study["runs"]]
    assert [r["cost"] for r in third["runs"]] == [r["cost"] for r in again["runs"]]
    # A probe still to run needs its pretraining's checkpoint, gone with the machine: that
    # pretraining runs again (deterministic: the probe scores as before), nothing else does.
    probe = ds.Run("seld", "avc", "foa", 0)
    (ledger / "seld" / f"{probe.name}.json").unlink()
    shutil.rmtree(tmp_path / "work")
    out4, _ = _study(tmp_path, tiny_root)
    assert f"pretrain {probe.name}: running" in out4 and f"seld {probe.name}: running" in out4
    assert out4.count(": running") == 2
    fourth = json.loads((tmp_path / "out" / "study.json").read_text())
    assert [r["metrics"] for r in fourth["runs"]] == [r["metrics"] for r in study["runs"]]
