"""Every command-line tool reports bad input as one ``error:`` line that names the path at
fault, with a non-zero exit status and no traceback; a conversion that writes no clip fails
and says what to change."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_convert_folder import write_scene
from test_convert_starss23 import write_recording

from spatialav.data import schema, storage

REPO = Path(__file__).resolve().parents[1]


def tool(name: str):
    """A script of data_tools/ as a module (its ``main(argv)``)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "data_tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def write_dataset(out: Path, splits: dict[str, int]) -> Path:
    """A minimal valid spatialav dataset (core fields only) with ``splits`` -> clip counts."""
    spec = schema.DatasetSpec(24000, 10.0, (16, 32), ("core",))
    out.mkdir(parents=True)
    serialize = storage.Serializer(schema.features(spec.groups))
    rng = np.random.default_rng(0)
    for split, n in splits.items():
        records = [serialize(schema.make_example(
            f"{split}/{i}", spec, audio=rng.uniform(-0.5, 0.5, (24000, 4)).astype(np.float32),
            frames=np.zeros((10, 16, 32, 3), np.uint8), sample_rate=24000, fps=10.0))
            for i in range(n)]
        storage.write_shard(out / storage.shard_filename("plain", split, 0, 1), records)
    storage.write_info(out, name="plain", config="cfg", version="1.0.0", description="",
                       spec=spec, shard_lengths={s: [n] for s, n in splits.items()})
    return out


def test_each_cli_reports_bad_input_without_a_traceback(tmp_path):
    missing, empty, a_file = tmp_path / "missing", tmp_path / "empty", tmp_path / "file.mp4"
    empty.mkdir()
    a_file.write_bytes(b"")
    dataset = write_dataset(tmp_path / "plain" / "cfg" / "1.0.0", {"train": 1})
    broken = tmp_path / "broken"
    (broken / "x").mkdir(parents=True)
    (broken / "x" / "dataset_info.json").write_text("{not json")
    out, work = str(tmp_path / "out"), str(tmp_path / "work")
    cases = {  # argv -> (text expected in the error line, the path it must name)
        ("data_tools/convert_starss23.py", "--root", str(missing), "--out", out):
            ("does not exist", missing),
        ("data_tools/convert_yt360.py", "--root", str(empty), "--out", out):
            ("is not a YT-360 root", empty),
        ("data_tools/convert_folder.py", "--root", str(a_file), "--out", out, "--layout",
         "ambix"): ("is not a directory", a_file),
        ("data_tools/detect.py", "--data", str(dataset), "--split", "train", "nosuch"):
            ("has no split 'nosuch'", dataset),
        ("-m", "spatialav.pretrain", "--task", "avsa", "--config", "tiny", "--data",
         str(broken), "--workdir", work): ("is not a readable TFDS dataset", broken / "x"),
        ("-m", "spatialav.probe", "--head", "seld", "--config", "tiny", "--data", str(missing),
         "--workdir", work): ("does not exist", missing),
        # A setting the task cannot train with: named before any data is read.
        ("-m", "spatialav.pretrain", "--task", "avsa", "--config", "tiny", "--data",
         str(dataset), "--set", "data.pipeline.num_views=0", "--workdir", work):
            ("needs data.pipeline.num_views >= 2, got 0", None),
    }
    if importlib.util.find_spec("ultralytics"):  # the detect extra
        not_weights = tmp_path / "weights.pt"
        not_weights.write_text("not a checkpoint\n")
        cases[("data_tools/detect.py", "--data", str(dataset), "--weights", str(not_weights))] = (
            "could not be loaded as a model", not_weights)
    # All at once: each is mostly interpreter start-up and imports.
    procs = {argv: subprocess.Popen([sys.executable, *argv], cwd=REPO, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for argv in cases}
    for argv, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        text, path = cases[argv]
        assert proc.returncode not in (0, None), (argv, err[-2000:])
        line = one_error_line(err)
        assert text in line and (path is None or str(path) in line), (argv, line)
    # The bad split and the bad weights were found before anything was written.
    assert not (dataset / "detections").exists()


@pytest.mark.parametrize("name, extra, text", [
    ("convert_starss23", [], "is not a STARSS23 root"),
    ("convert_yt360", [], "is not a YT-360 root"),
    ("convert_folder", ["--layout", "ambix"], "holds no video"),
    ("convert_folder", ["--layout", "ambix", "--validation-fraction", "0.5", "--test-fraction",
                        "0.5"], "must sum to less than 1"),
])
def test_converters_name_a_wrong_root(name, extra, text, tmp_path, capsys):
    root = tmp_path / "root"
    (root / "foa").mkdir(parents=True)
    with pytest.raises(SystemExit) as stop:
        tool(name).main(["--root", str(root), "--out", str(tmp_path / "out"), *extra])
    line = one_error_line(capsys.readouterr().err)
    assert stop.value.code == 1 and text in line
    assert str(root) in line or "fractions" in line


def test_recordings_all_shorter_than_the_clip_fail_with_the_fix(tmp_path, capsys):
    root = tmp_path / "STARSS23"
    write_recording(root, "dev-train-sony/fold3_room1_mix001", 2.0)
    write_recording(root, "dev-test-tau/fold4_room2_mix001", 1.5)
    argv = ["--root", str(root), "--out", str(tmp_path / "out"), "--workers", "1",
            "--frame-size", "16", "32", "--quiet"]
    starss23 = tool("convert_starss23")
    with pytest.raises(SystemExit) as stop:
        starss23.main(argv)  # the default --clip-s is 10
    line = one_error_line(capsys.readouterr().err)
    assert stop.value.code == 1
    assert line == ("error: no clips written: all 2 recordings are shorter than --clip-s 10 "
                    "(the longest lasts 2.00 s); pass --clip-s 2 or --clip-s 0 to keep whole "
                    "recordings")
    out = Path(starss23.main([*argv, "--clip-s", "2"]))  # the suggested fix works
    assert len(storage.open_split(out, "train")) == 1


def test_a_folder_without_a_usable_recording_fails(tmp_path, capsys):
    write_scene(tmp_path / "in" / "stereo.mp4", 0, 0, channels=2)
    (tmp_path / "in" / "junk.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(SystemExit) as stop:
        tool("convert_folder").main(["--root", str(tmp_path / "in"), "--out",
                                     str(tmp_path / "out"), "--layout", "ambix", "--workers",
                                     "1", "--frame-size", "16", "32", "--quiet"])
    captured = capsys.readouterr()
    line = one_error_line(captured.err)
    assert stop.value.code == 1
    assert line.startswith("error: no clips written: all 2 recordings were skipped "
                           "(channels 1, corrupt 1); the reasons are listed above and in ")
    assert "skipped stereo [channels]" in captured.out  # the summary came first
