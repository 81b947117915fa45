"""Extending a finished run: no stale final/ after an interrupted extension, and TensorBoard logs one
run with no step twice (issue 22, newcomer 6)."""

import pytest

from diffalign.trainers import get_trainer
from diffalign.trainers.run_dir import foreign_entries


def _train(tiny_config, directory, **train):
    config = tiny_config("rwr", train={"checkpoint_every": 1, "max_steps": 2, **train})
    return get_trainer("rwr")(config, directory)


def test_an_interrupted_extension_leaves_no_stale_final(tiny_config, tmp_path, monkeypatch, capsys):
    _train(tiny_config, tmp_path).train()
    weights = sorted(p.name for p in (tmp_path / "final").iterdir())
    extension = _train(tiny_config, tmp_path)

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(extension, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extension.train(max_steps=4)
    # final/ was the end of the 2-step run; it is moved aside, named by its step, not left looking current
    assert not (tmp_path / "final").exists()
    assert sorted(p.name for p in (tmp_path / "final-step-000002").iterdir()) == weights
    assert "final (step 2) moved to" in capsys.readouterr().err
    assert foreign_entries(tmp_path) == []  # still only a run's entries: --overwrite may replace it
    _train(tiny_config, tmp_path).train(max_steps=4)
    assert (tmp_path / "final").is_dir() and (tmp_path / "final-step-000002").is_dir()
    # rerunning a finished run is not an extension: its final/ stays
    _train(tiny_config, tmp_path).train(max_steps=4)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("final")) == ["final", "final-step-000002"]


def test_tensorboard_logs_one_run_and_no_step_twice(tiny_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tensorboard = {"report_to": "tensorboard", "log_every": 1}
    _train(tiny_config, tmp_path, **tensorboard).train()
    # as if killed after logging step 2 but before its checkpoint: the rerun resumes at step 1
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "step-000002")
    _train(tiny_config, tmp_path, **tensorboard).train()
    _train(tiny_config, tmp_path, **tensorboard).train(max_steps=3)  # and an extension
    run = tmp_path / "logs" / "diffalign"
    hparams = [p for p in run.iterdir() if p.is_dir()]
    assert len({p.parent for p in run.rglob("hparams.yml")}) == 1, hparams  # recorded once, not per invocation
    events = EventAccumulator(str(run), purge_orphaned_data=True)
    events.Reload()
    steps = [e.step for e in events.Scalars("loss")]
    assert steps == [1, 2, 3], steps
