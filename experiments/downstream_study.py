"""Downstream study: which pretraining (none, AVC, AVSA-viewpoints, AVSA-objects) and which
audio input format (FOA, stereo, mono) gives the best features for the downstream heads
(localisation maps, SELD, classification, separation)?

    python experiments/downstream_study.py --preset cpu

One command runs the whole grid: every init is pretrained with ``python -m spatialav.pretrain``
for every format and seed, then every head is probed with ``python -m spatialav.probe`` on
every (init, format, seed) cell of the preset, and the results are written to
``results/downstream.{md,json,png}`` (``downstream_<preset>`` for presets other than ``cpu``):
mean +- std over the seeds per cell, every per-seed number, whether the expectations from the
literature hold on our data, and the compute each stage took.

Every run is a subprocess writing into ``WORK/<stage>/<name>`` (stage ``pretrain`` or the
head), so a rerun of the same command skips finished runs (their ``summary.json`` /
``probe.json`` exist) and resumes interrupted ones from their checkpoints.

Finished runs also go to a ledger beside the report, ``results/downstream_runs/<stage>/
<name>.json`` (its settings, its cost record and its ``probe.json`` / ``summary.json``), which
is committed: ``runs/`` is not, and a study of several hours spans sessions on different
machines. A run in the ledger is never run again; a pretraining run is rerun (deterministically)
only when one of its probes is still to run and its checkpoint is gone. Subprocesses keep
one run's crash or memory from taking the study down and give each run's CPU time exactly; they
share a persistent XLA compilation cache (``WORK/jax_cache``), which halves the start-up cost
of repeated runs of one configuration (measured: 56 -> 25 CPU-s for a tiny pretraining run).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from downstream_report import FORMATS, INITS, PRETRAIN, flatten, write_reports

REPO = Path(__file__).resolve().parents[1]


# --- presets -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeadPlan:
    """One downstream stage of the study: which probe it runs, on which inits, formats and
    seeds, for how long."""

    head: str  # the stage's name (its work-directory folder and report table)
    formats: tuple[str, ...] = FORMATS
    steps: int | None = None  # probe training steps (None: the probe preset's)
    overrides: tuple[str, ...] = ()  # extra `--set` items of the probe
    probe_head: str | None = None  # spatialav.probe --head (None: ``head``)
    config: str | None = None  # spatialav.probe --config (None: the study's probe_config)
    finetune: bool = False  # spatialav.probe --finetune
    inits: tuple[str, ...] | None = None  # None: the study's inits
    seeds: tuple[int, ...] | None = None  # None: the study's seeds

    @property
    def probe(self) -> str:
        return self.probe_head or self.head


@dataclasses.dataclass(frozen=True)
class StudyPreset:
    name: str
    covers: str  # one line for the report: what the preset measures and what it leaves out
    pretrain_config: str  # spatialav.configs preset
    probe_config: str  # spatialav.downstream.config preset (its model = pretrain_config's)
    pretrain_steps: int
    seeds: tuple[int, ...]
    heads: tuple[HeadPlan, ...]  # what the preset runs
    extra_heads: tuple[HeadPlan, ...] = ()  # what `--heads` may add
    pretrain_overrides: tuple[str, ...] = ()
    inits: tuple[str, ...] = INITS

    def head_plan(self, stage: str) -> HeadPlan:
        return next(h for h in (*self.heads, *self.extra_heads) if h.head == stage)


# Localisation maps embed every (clip, direction) pair of an evaluation batch at once, so their
# memory grows with batch x grid: 16 clips x 24 x 12 directions of the CPU model took 13 GB.
MAP_MEMORY = ("eval.batch_size=4",)
SEPARATE = ("separation.mix.query_kinds=visual", "separation.train.progress=false")
# The supervised SELD reference (random init, trained end to end with the probe preset `seld`,
# its three probe seeds in one run): what the pretrained encoders' SELD figures compare with.
SUPERVISED = HeadPlan("supervised", ("foa",), probe_head="seld", config="seld", finetune=True,
                      inits=("random",), seeds=(0,), overrides=("train.progress=false",))


def micro() -> StudyPreset:
    """The test preset: tiny data and model, a few steps, one seed, FOA only."""
    quiet = ("train.progress=false", "eval.max_clips=4")
    return StudyPreset(
        name="micro",
        covers="a smoke test, not a measurement: 4 inits x FOA, localisation and SELD, 1 seed, "
               "a few steps on the tiny synthetic set",
        pretrain_config="tiny", probe_config="tiny", pretrain_steps=2, seeds=(0,),
        heads=(HeadPlan("localise", ("foa",), overrides=quiet),
               HeadPlan("seld", ("foa",), steps=2, overrides=quiet)),
        extra_heads=(HeadPlan("classify", ("foa",), steps=2, overrides=quiet),
                     HeadPlan("separate", ("foa",), steps=2, overrides=SEPARATE)),
        pretrain_overrides=("train.progress=false", "eval.max_clips=4", "eval.every=1000"),
    )


def cpu() -> StudyPreset:
    """About one hour on an idle 2-core CPU machine: the full init x format grid for the
    localisation maps; SELD and classification on FOA only.

    Budget (idle 2-core machine, records cached in memory, one STFT per clip): a `default`
    model pretraining run costs ~25 s of start-up and compilation, ~30 s for the first pass
    over the records (decompression-bound, ~4 steps/s) and then ~0.12 s a step; a
    localisation run ~35 s; a SELD probe of 400 steps ~90 s; a classification probe ~60 s.
    18 pretraining runs x 400 steps, 24 localisation runs, 8 SELD and 8 classification runs:
    ~60 min.
    """
    probe = ("train.progress=false", "train.checkpoint_every=100")
    return StudyPreset(
        name="cpu",
        covers="the full 4 inits x 3 formats grid for the localisation maps (32 test clips, "
               "12 x 6 directions); SELD (400 steps) and classification (300 steps) probes on "
               "FOA only, 48 test clips; 2 seeds; 400 pretraining steps per init, format and "
               "seed (the CPU `default` model at 400 of its 6000 steps: the pretext tasks "
               "are still learning); separation left out (`--heads` adds it)",
        pretrain_config="default", probe_config="default", pretrain_steps=400, seeds=(0, 1),
        heads=(HeadPlan("localise", FORMATS,
                        overrides=(*probe, *MAP_MEMORY, "eval.max_clips=32", "eval.maps=2",
                                   "head.grid_az=12", "head.grid_el=6")),
               HeadPlan("seld", ("foa",), steps=400, overrides=(*probe, "eval.max_clips=48")),
               HeadPlan("classify", ("foa",), steps=300,
                        overrides=(*probe, "eval.max_clips=48")),
               SUPERVISED),
        extra_heads=(HeadPlan("separate", ("foa",), steps=300, overrides=SEPARATE),),
        # AVSA with InfoNCE alone, like AVC and AVSA-objects: the inits then differ in their
        # pretext task, not in the form of the loss (the default preset adds a sigmoid term
        # for its binary alignment probe).
        pretrain_overrides=("train.progress=false", "eval.max_clips=64", "eval.every=100000",
                            "train.checkpoint_every=200", "objective.pair_weight=0"),
    )


def gpu() -> StudyPreset:
    """One GPU: the full grid on every head, separation included, 3 seeds."""
    return StudyPreset(
        name="gpu",
        covers="the full 4 inits x 3 formats grid on localisation, SELD and classification, "
               "separation with the FOA-pretrained visual encoders; 3 seeds; 5000 pretraining "
               "and 2000 probe steps (the `gpu` model)",
        pretrain_config="gpu", probe_config="gpu", pretrain_steps=5000, seeds=(0, 1, 2),
        heads=(HeadPlan("localise", FORMATS, overrides=("eval.batch_size=8",)),
               HeadPlan("seld", FORMATS, steps=2000),
               HeadPlan("classify", FORMATS, steps=2000),
               HeadPlan("separate", ("foa",), steps=2000, overrides=SEPARATE)),
        pretrain_overrides=("eval.every=100000",),
    )


PRESETS = {"micro": micro, "cpu": cpu, "gpu": gpu}



# --- the plan ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    stage: str  # 'pretrain' or a head
    init: str  # a pretraining task, or 'random' (probe stages only)
    fmt: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.init}-{self.fmt}-s{self.seed}"

    def workdir(self, work: Path) -> Path:
        return work / self.stage / self.name

    def pretrain_run(self) -> Run | None:
        """The pretraining run this probe run loads (None for random encoders)."""
        if self.stage == PRETRAIN or self.init == "random":
            return None
        return Run(PRETRAIN, self.init, self.fmt, self.seed)


def plan(preset: StudyPreset, heads: tuple[HeadPlan, ...]) -> list[Run]:
    """Every run, seed by seed (so an interrupted study has whole seeds to report): first
    the seed's pretraining runs that its probes load, then its probes."""
    runs = []
    for seed in preset.seeds:
        probes = [Run(h.head, init, fmt, seed) for h in heads if seed in (h.seeds or preset.seeds)
                  for init in (h.inits or preset.inits) for fmt in h.formats]
        needed = {(p.init, p.fmt) for p in probes}
        runs += [Run(PRETRAIN, task, fmt, seed) for task in preset.inits if task != "random"
                 for fmt in FORMATS if (task, fmt) in needed]
        runs += probes
    return runs


def command(run: Run, preset: StudyPreset, head: HeadPlan | None, work: Path,
            data_root: str | None) -> list[str]:
    """The ``spatialav.pretrain`` / ``spatialav.probe`` command line of one run."""
    common = [f"train.seed={run.seed}"] + ([f"data.root={data_root}"] if data_root else [])
    if run.stage == PRETRAIN:
        cmd = ["-m", "spatialav.pretrain", "--task", run.init, "--config",
               preset.pretrain_config, "--format", run.fmt, "--steps",
               str(preset.pretrain_steps), *_sets(preset.pretrain_overrides)]
    else:
        pre = run.pretrain_run()
        cmd = ["-m", "spatialav.probe", "--head", head.probe, "--config",
               head.config or preset.probe_config, *(["--finetune"] if head.finetune else []),
               "--init", str(pre.workdir(work)) if pre else "random", "--format", run.fmt,
               *(["--steps", str(head.steps)] if head.steps is not None else []),
               *_sets(head.overrides)]
    return [sys.executable, *cmd, *_sets(common), "--workdir", str(run.workdir(work))]


def _sets(items) -> list[str]:
    return [a for item in items for a in ("--set", item)]


TRAINS = ("classify", "doa", "seld", "separate")  # probes whose runs write summary.json
PER_SEED = ("classify", "doa", "seld")  # a head per probe seed (runner.train_and_score)


def is_done(run: Run, work: Path, preset: StudyPreset) -> bool:
    """A finished run: its training (if any) reached its steps without being preempted, and,
    for a probe, its probe.json exists. (A probe stopped by SIGTERM still scores its half-trained
    head and writes probe.json, so that file alone does not mean finished.)"""
    d = run.workdir(work)
    if run.stage != PRETRAIN and not (d / "probe.json").exists():
        return False
    probe = PRETRAIN if run.stage == PRETRAIN else preset.head_plan(run.stage).probe
    # classify / doa / seld train one head per probe seed, each in its own seed<s> folder
    paths = sorted(d.glob("seed*/summary.json")) if probe in PER_SEED else [d / "summary.json"]
    if not paths or not all(p.exists() for p in paths):
        return probe not in (PRETRAIN, *TRAINS)
    steps = preset.pretrain_steps if run.stage == PRETRAIN else None
    return all(not s.get("preempted") and (steps is None or s.get("step", 0) >= steps)
               for s in (json.loads(p.read_text()) for p in paths))


# --- the ledger of finished runs ---------------------------------------------------------------


def run_identity(run: Run, preset: StudyPreset) -> dict:
    """What a finished run's result depends on: the whole config its command resolves to, seed
    and steps included (so a changed preset default is a new run), and for a probe of
    pretrained encoders its pretraining's. Where the data and the runs live is left out."""
    from spatialav.configs import get_config, json_safe

    if run.stage == PRETRAIN:
        cfg = get_config(preset.pretrain_config, task=run.init, fmt=run.fmt, overrides=[
            *preset.pretrain_overrides, f"train.steps={preset.pretrain_steps}",
            f"train.seed={run.seed}"])
        return {"pretrain": json_safe(dataclasses.asdict(cfg))}
    from spatialav.downstream import config as probe_configs

    head = preset.head_plan(run.stage)
    cfg = probe_configs.get_config(
        head.config or preset.probe_config, task=head.probe, fmt=run.fmt,
        init="random" if run.init == "random" else "pretrained", finetune=head.finetune,
        overrides=[*head.overrides, *([f"train.steps={head.steps}"] if head.steps else []),
                   f"train.seed={run.seed}"])
    pre = run.pretrain_run()
    return {"probe": json_safe(dataclasses.asdict(cfg)),
            **(run_identity(pre, preset) if pre else {})}


def ledger_path(ledger: Path, run: Run) -> Path:
    return ledger / run.stage / f"{run.name}.json"


def read_ledger(ledger: Path, run: Run, identity: dict) -> dict | None:
    """The run's ledger entry if it holds a run of these settings."""
    path = ledger_path(ledger, run)
    if not path.exists():
        return None
    entry = json.loads(path.read_text())
    return entry if entry.get("identity") == identity else None


def write_ledger(ledger: Path, run: Run, work: Path, identity: dict) -> None:
    """Record a finished run: its settings, cost record and result file."""
    d = run.workdir(work)
    result = d / ("summary.json" if run.stage == PRETRAIN else "probe.json")
    entry = {"identity": identity,
             "cost": json.loads((d / RECORD).read_text()) if (d / RECORD).exists() else None,
             "result": json.loads(result.read_text())}
    path = ledger_path(ledger, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry, indent=2) + "\n")


# --- running -----------------------------------------------------------------------------------


RECORD = "study_run.json"  # per run: its command, wall and CPU time, load, exit status
LOG = "study.log"  # per run: its stdout and stderr


class Interrupted(Exception):
    """SIGTERM / SIGINT: the current run was asked to stop (it checkpoints) and the study ends."""


def execute(run: Run, cmd: list[str], work: Path, env: dict, total_steps: int | None) -> dict:
    """Run one command to completion; returns (and writes) its record. The child gets SIGTERM
    when the study is interrupted (the trainer then checkpoints and exits), so a rerun resumes
    it instead of racing an orphan. Wall and CPU time add up over the attempts at a run."""
    d = run.workdir(work)
    d.mkdir(parents=True, exist_ok=True)
    earlier = json.loads((d / RECORD).read_text()) if (d / RECORD).exists() else {}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0, loads, last_beat = time.time(), [os.getloadavg()[0]], time.time()

    def record(rc) -> dict:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        rec = {"command": shlex.join(cmd), "rc": rc,
               "started": datetime.datetime.fromtimestamp(t0).isoformat(timespec="seconds"),
               "attempts": earlier.get("attempts", 0) + 1,
               "wall_s": earlier.get("wall_s", 0.0) + time.time() - t0,
               "cpu_s": earlier.get("cpu_s", 0.0) + cpu,
               "load_mean": sum(loads) / len(loads), "load_max": max(loads)}
        if rc != 0:
            rec["error"] = _tail(d / LOG) if rc is not None else "interrupted"
        (d / RECORD).write_text(json.dumps(rec, indent=2))
        return rec

    with open(d / LOG, "ab") as log:
        log.write(f"\n$ {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    return record(proc.wait(timeout=5))
                except subprocess.TimeoutExpired:
                    loads.append(os.getloadavg()[0])
                    if time.time() - last_beat > 120:
                        last_beat = time.time()
                        print(f"    ... {time.time() - t0:.0f} s{_progress(d, total_steps)}",
                              flush=True)
        except (KeyboardInterrupt, Interrupted):
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            record(None)
            raise


def _progress(d: Path, total: int | None) -> str:
    """', step N/M' from a run's metrics log, if it has one yet."""
    logs = sorted(d.glob("seed*/logs/metrics.jsonl"), key=lambda p: p.stat().st_mtime)
    path = logs[-1] if logs else d / "logs" / "metrics.jsonl"  # per-seed probes: the latest
    if not path.exists():
        return ""
    lines = path.read_text().splitlines()
    step = json.loads(lines[-1]).get("step") if lines else None
    seed = f" of {path.parts[-3]}" if logs else ""
    if step is None:
        return ""
    return f", step {step}" + (f"/{total}" if total else "") + seed


def _tail(path: Path, n: int = 6) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def head_available(head: str, env: dict) -> str | None:
    """None if the head's module imports, else the error (the separation head is optional:
    it is developed separately and the study must run without it)."""
    if head != "separate":
        return None
    p = subprocess.run([sys.executable, "-c", "import spatialav.downstream.separation"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    return None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["?"])[-1]


def check_study_dir(work: Path, identity: dict):
    """Refuse to mix runs of different settings in one work directory; heads may be added."""
    path = work / "study.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = [k for k in identity if k != "heads" and old.get(k) != identity[k]]
        diff += [f"heads.{h}" for h, v in identity["heads"].items()
                 if old.get("heads", {}).get(h, v) != v]
        if diff:
            raise SystemExit(f"error: {work} holds a study with other settings ({diff} "
                             f"differ; see {path}); use another --workdir")
        identity = {**identity, "heads": {**old.get("heads", {}), **identity["heads"]}}
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2))


def collect(runs: list[Run], work: Path, status: dict[Run, str],
            entries: dict[Run, dict] | None = None) -> list[dict]:
    """One record per planned run: its metrics (if finished) and cost (if it ran), from its
    work directory or, where that is gone, its ledger entry (``entries``)."""
    out = []
    for run in runs:
        d = run.workdir(work)
        entry = (entries or {}).get(run) or {}
        rec = {"stage": run.stage, "init": run.init, "format": run.fmt, "seed": run.seed,
               "workdir": str(d), "status": status.get(run, "pending"), "metrics": {}}
        if (d / RECORD).exists():
            rec["cost"] = json.loads((d / RECORD).read_text())
        elif entry.get("cost"):
            rec["cost"] = entry["cost"]
        result = d / ("summary.json" if run.stage == PRETRAIN else "probe.json")
        data = json.loads(result.read_text()) if result.exists() else entry.get("result")
        if rec["status"] == "done" and data is not None:
            rec["metrics"] = flatten(data["eval"] if run.stage == PRETRAIN else data["metrics"])
            if "ci95" in data:  # probes: each metric's 95 % bootstrap interval over the clips
                rec["ci95"] = flatten(data["ci95"], intervals=True)
            if "train" in data:  # probes: each probe seed's steps and training seconds
                rec["train"] = data["train"]
        out.append(rec)
    return out


# --- the command -------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="presets:\n" + "\n".join(
                                    f"  {k:6s} {v().covers}" for k, v in PRESETS.items()))
    p.add_argument("--preset", default="cpu", choices=list(PRESETS),
                   help="micro (test, ~2 min), cpu (~1 h on 2 idle cores), gpu (default: cpu)")
    p.add_argument("--workdir", help="runs go to WORKDIR/<stage>/<name>; rerunning resumes "
                                     "(default: runs/downstream_study/<preset>)")
    p.add_argument("--out", help="report path without extension; .md, .json and .png are "
                                 "written, and the ledger of finished runs goes to "
                                 "OUT_runs/ (default: results/downstream for cpu, "
                                 "results/downstream_<preset> otherwise)")
    p.add_argument("--heads", help="comma-separated heads to run, e.g. localise,separate "
                                   "(default: the preset's; separate uses FOA encoders)")
    p.add_argument("--data-root", help="where the synthetic dataset is built / found "
                                       "(default: the presets', ~/.cache/spatialav)")
    return p.parse_args(argv)


def select_heads(preset: StudyPreset, names: str | None) -> tuple[HeadPlan, ...]:
    """The preset's heads, or those named (from the preset's heads and extra heads)."""
    if not names:
        return preset.heads
    known = {h.head: h for h in (*preset.extra_heads, *preset.heads)}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in wanted if n not in known]
    if bad:
        raise SystemExit(f"error: --heads {names!r}: preset {preset.name} has no head {bad}; "
                         f"it offers {sorted(known)}")
    return tuple(known[n] for n in wanted)


def study_identity(preset: StudyPreset, data_root: str | None) -> dict:
    """What the finished runs of a work directory depend on: the pretraining and probe settings
    and each head's plan (seeds and formats only add or drop runs, so they may change)."""
    return json.loads(json.dumps({
        "pretrain": [preset.pretrain_config, preset.pretrain_steps,
                     preset.pretrain_overrides],
        "probe_config": preset.probe_config, "data_root": data_root,
        "heads": {h.head: [h.steps, h.overrides, h.probe, h.config, h.finetune]
                  for h in preset.heads}}))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    preset = PRESETS[args.preset]()
    heads = select_heads(preset, args.heads)
    preset = dataclasses.replace(preset, heads=heads)
    work = Path(args.workdir or REPO / "runs" / "downstream_study" / preset.name).resolve()
    out = Path(args.out or REPO / "results" / ("downstream" if preset.name == "cpu"
                                                else f"downstream_{preset.name}"))
    ledger = out.parent / f"{out.name}_runs"
    data_root = os.path.abspath(os.path.expanduser(args.data_root)) if args.data_root else None
    check_study_dir(work, study_identity(preset, data_root))
    preset_dict = json.loads(json.dumps(dataclasses.asdict(preset)))
    head_names = [h.head for h in heads]
    command_line = "python " + shlex.join([os.path.relpath(__file__, REPO), *argv])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(work / "jax_cache"))

    def on_term(signum, frame):
        raise Interrupted()

    signal.signal(signal.SIGTERM, on_term)
    t0, load_start = time.time(), os.getloadavg()
    notes, unavailable = [], {}
    for h in heads:
        err = head_available(h.head, env)
        if err:
            unavailable[h.head] = err
            notes.append(f"head `{h.head}` skipped: it does not import ({err}).")
    heads_run = tuple(h for h in heads if h.head not in unavailable)
    runs = plan(preset, heads_run)
    by_head = {h.head: h for h in heads_run}
    status: dict[Run, str] = {}
    idents = {run: run_identity(run, preset) for run in runs}
    entries = {run: e for run in runs if (e := read_ledger(ledger, run, idents[run]))}
    counts = {"executed": 0, "skipped": 0, "failed": 0}
    print(f"study {preset.name}: {len(runs)} runs in {work}, {len(entries)} in the ledger "
          f"{ledger}", flush=True)
    interrupted = False
    try:
        for i, run in enumerate(runs, 1):
            tag = f"[{i}/{len(runs)}] {run.stage} {run.name}"
            # A pretraining run in the ledger still runs when a probe still to run needs its
            # checkpoint and the checkpoint is gone (a new machine).
            needed = run.stage == PRETRAIN and any(
                r.pretrain_run() == run and r not in entries for r in runs)
            if is_done(run, work, preset) or (run in entries and not needed):
                if run not in entries:
                    write_ledger(ledger, run, work, idents[run])
                    entries[run] = read_ledger(ledger, run, idents[run])
                status[run] = "done"
                counts["skipped"] += 1
                continue
            pre = run.pretrain_run()
            if pre is not None and status.get(pre) != "done":
                status[run] = "blocked"
                print(f"{tag}: skipped, its pretraining {pre.name} did not finish", flush=True)
                continue
            print(f"{tag}: running", flush=True)
            cmd = command(run, preset, by_head.get(run.stage), work, data_root)
            steps = preset.pretrain_steps if run.stage == PRETRAIN else by_head[run.stage].steps
            rec = execute(run, cmd, work, env, steps)
            counts["executed"] += 1
            ok = rec["rc"] == 0 and is_done(run, work, preset)
            status[run] = "done" if ok else "failed"
            if ok:
                write_ledger(ledger, run, work, idents[run])
                entries[run] = read_ledger(ledger, run, idents[run])
            counts["failed"] += not ok
            print(f"{tag}: {'done' if ok else 'FAILED'} in {rec['wall_s']:.0f} s "
                  f"(CPU {rec['cpu_s']:.0f} s, load {rec['load_mean']:.1f})"
                  + ("" if ok else f"; log {run.workdir(work) / LOG}:\n{rec.get('error', '')}"),
                  flush=True)
            if i < len(runs) and runs[i].seed != run.seed:  # a seed is complete: report it
                write_reports(out, preset_dict, head_names,
                              collect(runs, work, status, entries), command_line,
                              list(notes), {**counts, "wall_s": time.time() - t0},
                              load_start)
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        notes.append("the study was interrupted: rerun the command to finish it.")
    records = collect(runs, work, status, entries)
    write_reports(out, preset_dict, head_names, records, command_line, notes,
                  {**counts, "wall_s": time.time() - t0}, load_start)
    print(f"wrote {out}.md, .json (.png beside them unless the notes say why not); {counts}",
          flush=True)
    return 1 if interrupted or counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
