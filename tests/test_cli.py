"""CLI: bad input gives one line on stderr and a non-zero exit, never a traceback."""

import subprocess
import sys

import pytest

from diffalign.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["sample", "--model", "nope"], "unknown model 'nope'"),
        (["sample", "--sampler", "nope"], "unknown sampler 'nope'; valid choices: ancestral, best-of-n"),
        (["sample", "--reward", "nope"], "unknown reward 'nope'; valid choices:"),
        (["sample", "--sampler", "best-of-n", "--reward", "digit", "--target", "3", "--nfe", "0"], "nfe must be a positive integer"),
        (["sample", "--sampler", "best-of-n", "--reward", "digit", "--target", "3", "--nfe", "-5"], "nfe must be a positive integer"),
        (["sample", "--sampler", "best-of-n", "--reward", "digit", "--target", "3", "--nfe", "100"], "nfe=100 is too small for best-of-n"),
        (["sample", "--nfe", "abc"], "nfe must be a positive integer such as 20000, 20_000 or 2e4, got 'abc'"),
        (["sample", "--out", "/proc/forbidden/x.png"], "cannot create output directory"),
        (["sample", "--out", "samples.jpg"], "must end in .png"),
        (["sample", "--reward", "digit", "--target", "12"], "target"),
        (["sample", "--option", "novalue"], "is not KEY=VALUE"),
        (["sample", "--sampler", "dts", "--reward", "digit", "--target", "3", "--nfe", "1e12"],
         "more than the default cap"),  # it tried to allocate 667 GB (issue 22, runs 7)
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line(capsys, tmp_path, argv, message):
    if "--out" not in argv:
        argv = argv + ["--out", str(tmp_path / "s.png")]
    code, _, err = run(capsys, *argv)
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_missing_and_corrupt_weights(capsys, tmp_path):
    import shutil

    from diffalign.zoo import EMBEDDED

    broken = tmp_path / "broken"
    shutil.copytree(EMBEDDED["digits"], broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    code, _, err = run(capsys, "sample", "--model", str(broken), "--out", str(tmp_path / "a.png"))
    assert code == 2 and "corrupt or incompatible weights" in err and len(err.strip().splitlines()) == 1
    weights.unlink()
    code, _, err = run(capsys, "sample", "--model", str(broken), "--out", str(tmp_path / "a.png"))
    assert code == 2 and "missing weights file" in err
    (broken / "class_embeddings.safetensors").write_bytes(b"\x00" * 10)
    shutil.copy(EMBEDDED["digits"] / "unet" / "diffusion_pytorch_model.safetensors", weights)
    code, _, err = run(capsys, "sample", "--model", str(broken), "--out", str(tmp_path / "a.png"))
    assert code == 2 and "corrupt weights file" in err


def test_sample_writes_png(capsys, tmp_path):
    out = tmp_path / "deep" / "samples.png"
    code, stdout, err = run(
        capsys, "sample", "--model", "digits", "--sampler", "best-of-n", "--reward", "digit", "--target", "3",
        "--nfe", "2000", "--num-samples", "4", "--steps", "10", "--out", str(out),
    )
    assert code == 0, err
    assert out.exists() and out.stat().st_size > 0
    assert "2000 NFE" in stdout


def test_sample_with_reward_guidance(capsys, tmp_path):
    """--guidance-scale guides with the --reward; the default clip keeps digits on the data, and an
    unclipped run that leaves it says so in one warning line (issue 22, newcomer 3)."""
    args = ("sample", "--model", "digits", "--reward", "digit", "--target", "3", "--guidance-scale", "3",
            "--num-samples", "8", "--steps", "20", "--out", str(tmp_path / "g.png"))
    code, stdout, err = run(capsys, *args)
    assert code == 0 and err == "", err
    assert "8 samples, 320 NFE" in stdout  # 20 guided steps x (forward + backward): the NFE of guidance
    reward = float(stdout.split("mean reward ")[1].split(",")[0])
    assert reward > -1.0  # log p(3 | x): the unguided model's samples score about -9.7
    code, stdout, err = run(capsys, *args, "--guidance-clip", "none")
    assert code == 0
    assert err.startswith("diffalign: warning: ancestral: reward guidance (scale=3, max_grad_norm=None) pushed")
    assert len(err.strip().splitlines()) == 1


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0 and "best-of-n" in out and "digit" in out and "digits-flow" in out


def test_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "diffalign.cli", "sample", "--model", "nope", "--out", str(tmp_path / "x.png")],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("diffalign: error: unknown model 'nope'")
    assert "Traceback" not in proc.stderr
