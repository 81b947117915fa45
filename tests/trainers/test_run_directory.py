"""The run directory (issue 22, runs and files 1, 3, 8): --overwrite deletes only a diffalign run,
a lock makes the directory one run's, leftovers are cleaned. Each test notes how it failed before."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffalign.cli import main
from diffalign.errors import DiffalignError
from diffalign.trainers import load_config
from diffalign.trainers.command import prepare_output_dir
from diffalign.trainers.recorded_config import check_same_run
from diffalign.trainers.config import to_dict
from diffalign.trainers.run_dir import LOCK_FILE, RunLock

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "grpo_digits.yaml")


def _config_dict(*overrides):
    return to_dict(load_config(CONFIG, list(overrides)))


def _fake_run(directory: Path, *extra: str) -> Path:
    """A run directory as a killed run leaves it: config, a checkpoint, final/, logs/."""
    (directory / "checkpoints" / "step-000002").mkdir(parents=True)
    (directory / "checkpoints" / "step-000002" / "state.json").write_text("{}")
    (directory / "final").mkdir()
    (directory / "logs").mkdir()
    (directory / "config.yaml").write_text(yaml.safe_dump(_config_dict()))
    for name in extra:
        (directory / name).write_text("mine")
    return directory


def test_overwrite_refuses_a_foreign_directory(tmp_path, capsys):
    """Failed before: --overwrite emptied a folder with a thesis in it."""
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.pdf").write_text("years of work")
    assert main(["train", CONFIG, "--output-dir", str(folder), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no diffalign run" in err and "pass --overwrite" not in err
    assert (folder / "thesis.pdf").read_text() == "years of work"
    assert sorted(os.listdir(folder)) == ["thesis.pdf"]  # not even the lock is left


def test_overwrite_refuses_a_run_directory_holding_other_files(tmp_path):
    """Failed before: the whole directory was removed, notes included."""
    run = _fake_run(tmp_path / "run", "notes.txt")
    with pytest.raises(DiffalignError, match=r"not a diffalign run's \(notes.txt\)"):
        prepare_output_dir(run, _config_dict(), overwrite=True, is_main=True)
    assert (run / "notes.txt").exists() and (run / "checkpoints").exists()


def test_overwrite_removes_a_run_and_writes_the_new_config(tmp_path):
    run = _fake_run(tmp_path / "run", ".final.old-123")
    prepare_output_dir(run, _config_dict("seed=5"), overwrite=True, is_main=True)
    assert sorted(os.listdir(run)) == ["config.yaml"]
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 5


@pytest.mark.parametrize("where", ["cwd", "parent", "home"])
def test_overwrite_never_deletes_the_working_or_home_directory(tmp_path, monkeypatch, capsys, where):
    """Failed before: `--output-dir . --overwrite` emptied the working directory."""
    run = _fake_run(tmp_path / "run")
    inner = run / "logs"
    monkeypatch.chdir({"cwd": run, "parent": inner, "home": tmp_path}[where])
    monkeypatch.setenv("HOME", str(run))
    target = {"cwd": ".", "parent": "..", "home": str(run)}[where]
    assert main(["train", CONFIG, "--output-dir", target, "--overwrite"]) == 2
    assert "refusing --overwrite" in capsys.readouterr().err
    assert (run / "checkpoints" / "step-000002").is_dir()


def test_a_live_lock_refuses_a_second_run_and_an_overwrite(tmp_path, capsys):
    """Failed before: no lock; a second run on the same directory (or --overwrite) went ahead."""
    run = _fake_run(tmp_path / "run")
    (run / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    for extra in ([], ["--overwrite"]):
        assert main(["train", CONFIG, "--output-dir", str(run), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"in use by pid {os.getpid()}" in err, err
    assert (run / "checkpoints").is_dir()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    lock = RunLock(tmp_path).acquire()
    assert lock.took_over["pid"] == dead.pid
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_on_another_host_is_respected(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(DiffalignError, match="in use by pid 1 on host 'elsewhere'"):
        RunLock(tmp_path).acquire()


def test_resume_accepts_a_key_added_later_at_its_default(tmp_path):
    """A run recorded before train.ema_warmup existed still resumes (the key is at its default)."""
    recorded = _config_dict()
    del recorded["train"]["ema_warmup"]
    check_same_run(recorded, _config_dict(), tmp_path)
    with pytest.raises(DiffalignError, match="train.ema_warmup"):
        check_same_run(recorded, _config_dict("train.ema_warmup=false"), tmp_path)


def test_the_python_api_checks_the_recorded_config(tiny_config, tmp_path):
    """Failed before: a Trainer on a CLI run's directory resumed it with a different config."""
    from diffalign.trainers import get_trainer

    prepare_output_dir(tmp_path, to_dict(tiny_config("rwr")), overwrite=False, is_main=True)
    trainer = get_trainer("rwr")(tiny_config("rwr", seed=5), tmp_path)
    with pytest.raises(DiffalignError, match="seed=0"):
        trainer.train()


def test_leftovers_of_a_killed_run_are_cleaned_on_the_next_run(tiny_config, tmp_path):
    """Failed before: .final.old-*, .final.* and a half-pruned checkpoint stayed forever."""
    from diffalign.trainers import get_trainer

    for name in (".final.old-123", ".final.x1y2", "checkpoints/.step-000001.pruned-77", "checkpoints/.step-000002.tmp"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "pytorch_lora_weights.safetensors").write_bytes(b"half")
    trainer = get_trainer("rwr")(tiny_config("rwr"), tmp_path)
    assert trainer.resume() is False
    assert sorted(os.listdir(tmp_path)) == ["checkpoints"] and os.listdir(tmp_path / "checkpoints") == []
