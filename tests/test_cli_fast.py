"""The CLI answers bad input before importing torch, and its light catalog matches the registries."""

import inspect
import subprocess
import sys

import pytest

from diffalign import cli_validation as catalog
from diffalign.cli import main

# Run the CLI in a fresh interpreter and report which heavy modules it imported.
PROBE = (
    "import sys\n"
    "from diffalign.cli import main\n"
    "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exit:  # --help, --version\n    code = exit.code\n"
    "sys.stdout.flush()\n"
    "print('HEAVY:' + ','.join(m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run_fresh(*argv):
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "", "PYTHONPATH": ":".join(sys.path)})
    *lines, heavy = proc.stderr.strip().splitlines()
    return proc.returncode, proc.stdout, "\n".join(lines), heavy.removeprefix("HEAVY:")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["sample", "--sampler", "bon"], "unknown sampler 'bon'; valid choices: ancestral, best-of-n"),
        (["sample", "--model", "nope"], "unknown model 'nope'"),
        (["sample", "--reward", "nope"], "unknown reward 'nope'"),
        (["sample", "--sampler", "dts", "--reward", "digit", "--target", "3", "--option", "max_bytes=1"],
         "unknown option(s) max_bytes for sampler 'dts'; valid options: lam"),
        (["sample", "--reward", "noisy-reward"], "reward 'noisy-reward' needs option(s): path"),
        (["sample", "--reward", "digit", "--target", "3", "--reward-option", "colour=1"], "unknown option(s) colour"),
        (["sample", "--sampler", "sir"], "sampler 'sir' needs --reward"),
        (["sample", "--cfg", "3"], "--cfg 3 needs --cond"),
        (["sample", "--nfe", "1.5"], "nfe must be a positive integer"),
        (["sample", "--nfe", "0"], "nfe must be a positive integer"),
        (["sample", "--out", "x.jpg"], "must end in .png"),
        (["sample", "--reward", "digit=1.0,nope=2", "--target", "3"], "unknown reward 'nope'"),
        (["sample", "--reward", "digit=heavy", "--target", "3"], "the weight of 'digit' must be a finite number"),
        (["sample", "--reward", "noisy-reward=1,compressibility=0.1"], "reward 'noisy-reward' needs option(s): path"),
        (["sample", "--reward", "compressibility=1,incompressibility=1", "--target", "3"],
         "unknown option(s) target for rewards compressibility, incompressibility"),
        (["sample", "--rlg-weight", "2"], "--rlg-weight needs --rlg-lora"),
        (["sample", "--guidance-scale", "3"], "--guidance-scale needs --reward"),
        (["sample", "--guidance-scale", "inf", "--reward", "digit"], "--guidance-scale must be a finite number, got inf"),
        (["sample", "--guidance-clip", "1"], "--guidance-clip needs --guidance-scale"),
        (["sample", "--guidance-scale", "3", "--reward", "digit", "--guidance-clip", "-1"],
         "--guidance-clip must be a positive number or 'none' (unclipped), got '-1'"),
        (["sample", "--guidance-scale", "3", "--reward", "digit", "--guidance-clip", "big"],
         "--guidance-clip must be a positive number or 'none'"),
    ],
)
def test_bad_input_is_refused_without_importing_torch(tmp_path, argv, message):
    if "--out" not in argv:
        argv = argv + ["--out", str(tmp_path / "s.png")]
    code, _, err, heavy = run_fresh(*argv)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert heavy == "", f"validation imported {heavy}"


@pytest.mark.parametrize("argv", [["--help"], ["sample", "--help"], ["--version"]])
def test_help_and_version_import_no_torch(argv):
    code, out, _, heavy = run_fresh(*argv)
    assert code == 0 and heavy == ""
    assert out


def test_sample_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    out = capsys.readouterr().out
    for text in ("(default: samples.png)", "(default: ancestral)", "(default: digits)", "(default: 16)",
                 "(default: the model's own, 2 for digits-fast, else 50)", "(default: 1.0)", "best-of-n, dts, dts-star, hypernoise, reno, sir, smc"):
        assert text in " ".join(out.split()), text


def test_version(capsys):
    from diffalign.version import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"diffalign {__version__}"


@pytest.mark.parametrize("text,value", [("20000", 20000), ("20_000", 20000), ("2e4", 20000), ("1E4", 10000)])
def test_nfe_accepts_plain_underscored_and_scientific(text, value):
    assert catalog.parse_count(text) == value


@pytest.mark.parametrize("text", ["1.5", "abc", "0", "-3", "nan", "inf", "1e-3"])
def test_nfe_refuses_non_integers(text):
    with pytest.raises(ValueError, match="nfe must be a positive integer"):
        catalog.parse_count(text)


def _signature_options(factory):
    params = inspect.signature(factory).parameters.values()
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return tuple(p.name for p in named), tuple(p.name for p in named if p.default is p.empty)


def test_catalog_matches_the_registries():
    """If this fails, a sampler or reward changed: update diffalign/cli_validation.py to match."""
    import diffalign as da
    from diffalign.zoo import EMBEDDED
    from diffalign.rewards import REWARDS
    from diffalign.samplers import SAMPLERS

    assert set(catalog.MODELS) == set(EMBEDDED)
    assert tuple(catalog.KERNELS) == tuple(da.kernels.KERNELS.names())
    assert set(catalog.SAMPLER_OPTIONS) == set(SAMPLERS.names())
    for name in SAMPLERS.names():
        factory = SAMPLERS._factories[name]
        assert catalog.SAMPLER_OPTIONS[name] == _signature_options(factory)[0], name
        assert (name in catalog.SAMPLERS_NEEDING_REWARD) == factory.needs_reward, name
    assert set(catalog.REWARD_OPTIONS) == set(REWARDS.names())
    for name in REWARDS.names():
        options, required = _signature_options(REWARDS._factories[name])
        assert catalog.REWARD_OPTIONS[name] == options, name
        assert tuple(catalog.REWARDS_REQUIRED_OPTIONS.get(name, ())) == required, name


def test_list_shows_sampler_options_and_defaults(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "max_memory_bytes=None" in out and "leaves_per_iteration=16" in out
    assert "potential='diff'" in out and "n=None" in out
    dts, dts_star = (line for line in out.splitlines() if line.split()[:1] in (["dts"], ["dts-star"]))
    assert "lam=1.0, preset='exact'" in dts and "lam=inf, c_pw=1.0, alpha=0.5, c_uct=0.3" in dts_star


def test_bad_name_is_refused_quickly():
    """Generous bound (the benchmark measures ~0.1 s; importing torch and diffusers first took ~14 s):
    benchmarks/cli_latency.py has the real figures."""
    import time

    start = time.perf_counter()
    code, _, err, _ = run_fresh("sample", "--sampler", "bon", "--out", "x.png")
    assert code == 2 and "unknown sampler 'bon'" in err
    assert time.perf_counter() - start < 8.0
