"""Refusals of the commands that read and write files (issue 11, kinds 3 and 9): an output never
replaces an input of the same run, not even with --overwrite; every bad output folder, device,
checkpoint, length or count is one line on stderr with exit code 2, before any work, and names
the measured value or the cause; nothing is written and every input keeps its bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.config_io import apply_overrides

from .conftest import chirp_plus_noise, invoke, one_line_exit_2, random_export
from .test_cli_synthesis import _run_dir


@pytest.fixture
def model(tiny_config, tmp_path):
    return random_export(tiny_config, tmp_path / "tiny.safetensors", output_std=0.2)


@pytest.fixture
def speech(tmp_path):
    """A 24-bit original at another rate: vocoding it would write a different (16-bit) file."""
    path = tmp_path / "D" / "speech.wav"
    path.parent.mkdir()
    sf.write(path, chirp_plus_noise(44100, 0.3), 44100, subtype="PCM_24")
    return path


@pytest.fixture
def generator(tiny_config, tmp_path):
    """An unconditional waveform generator (hop 256 at 22050 Hz)."""
    cfg = apply_overrides(tiny_config, ["model.conditioning=none"])
    return random_export(cfg, tmp_path / "gen.safetensors")


@pytest.fixture
def text_checkpoint(tmp_path):
    """A text file that torch's reader fails on with ``IndexError: pop from empty list``."""
    path = tmp_path / "notes.pt"
    path.write_text("e\n", encoding="utf-8")
    return path


def _no_suggestion(result):
    assert "--overwrite to replace" not in result.output and "pass --overwrite" not in result.output


# --- kind 3: an output never replaces an input of the same run ----


def test_vocode_into_the_inputs_folder_never_replaces_the_input(model, speech, tmp_path):
    before = speech.read_bytes()
    for extra in ([], ["--overwrite"]):
        result = invoke("vocode", model, speech, "-o", speech.parent, *extra)
        one_line_exit_2(result, f"output {speech} is an input of this run")
        _no_suggestion(result)
    # Another spelling of the same folder (a symlink) is the same file after realpath.
    link = tmp_path / "link"
    link.symlink_to(speech.parent)
    result = invoke("vocode", model, speech, "-o", link, "--overwrite")
    one_line_exit_2(result, "is an input of this run")
    assert speech.read_bytes() == before
    assert sf.info(speech).subtype == "PCM_24"
    assert sorted(p.name for p in speech.parent.iterdir()) == ["speech.wav"]


def test_mel_never_replaces_its_input(tmp_path):
    # An audio file named like mel's output: <stem>.npz in its own folder.
    odd = tmp_path / "D" / "speech.npz"
    odd.parent.mkdir()
    sf.write(odd, chirp_plus_noise(22050, 0.3), 22050, format="WAV", subtype="PCM_24")
    before = odd.read_bytes()
    result = invoke("mel", odd, "--profile", "hifigan", "-o", odd.parent, "--overwrite")
    one_line_exit_2(result, f"output {odd} is an input of this run")
    _no_suggestion(result)
    assert odd.read_bytes() == before


def test_single_output_commands_never_replace_their_input(model, tmp_path, speech):
    from .test_diffwave_import import _params, _save_like_lmnt, lmnt_state_dict

    before = model.read_bytes()
    # search-schedule -o SOURCE: refused before the search (use --in-place for that)
    manifest = tmp_path / "val.jsonl"
    manifest.write_text(f'{{"path": "{speech}", "duration_s": 0.3}}\n', encoding="utf-8")
    result = invoke("search-schedule", model, "--steps", "2", "--manifest", manifest, "-o", model,
                    "--overwrite")  # fmt: skip
    one_line_exit_2(result, f"output {model} is an input of this run")
    _no_suggestion(result)
    assert model.read_bytes() == before
    # search-schedule -o MANIFEST
    text = manifest.read_bytes()
    result = invoke("search-schedule", model, "--steps", "2", "--manifest", manifest,
                    "-o", manifest, "--overwrite")  # fmt: skip
    one_line_exit_2(result, "is an input of this run")
    assert manifest.read_bytes() == text
    # import-diffwave W W
    src = _save_like_lmnt(tmp_path / "w.safetensors", lmnt_state_dict(), _params())
    weights = src.read_bytes()
    result = invoke("import-diffwave", src, src, "--overwrite")
    one_line_exit_2(result, f"output {src} is an input of this run")
    assert src.read_bytes() == weights
    # evaluate --json onto one of the scored files
    refs, gens = tmp_path / "refs", tmp_path / "gens"
    for d in (refs, gens):
        d.mkdir()
        sf.write(d / "a.wav", chirp_plus_noise(22050, 0.3), 22050)
    audio = (gens / "a.wav").read_bytes()
    result = invoke("evaluate", refs, gens, "--json", gens / "a.wav", "--overwrite", "--no-pesq")
    one_line_exit_2(result, "is an input of this run")
    assert (gens / "a.wav").read_bytes() == audio


def test_demo_clip_is_not_an_output(model, tmp_path):
    out = tmp_path / "demo"
    clip = out / "original" / "example.wav"
    clip.parent.mkdir(parents=True)
    sf.write(clip, chirp_plus_noise(22050, 0.3), 22050, subtype="PCM_24")
    before = clip.read_bytes()
    result = invoke("demo", "-o", out, "--model", model, "--clip", clip, "--overwrite")
    one_line_exit_2(result, f"output {clip} is an input of this run")
    assert clip.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["original"]


def test_train_refuses_a_manifest_the_run_would_overwrite(tiny_config, tmp_path, manifests):
    from .test_train import RECIPE

    run = tmp_path / "run"
    run.mkdir()
    moved = run / "metrics.jsonl"  # the trainer appends its metrics here
    moved.write_bytes(manifests[0].read_bytes())
    before = moved.read_bytes()
    result = invoke("train", RECIPE, "--run-dir", run, "--set", f"data.train_manifest={moved}",
                    "--set", "train.max_steps=1")  # fmt: skip
    one_line_exit_2(result, f"output {moved} is an input of this run")
    assert moved.read_bytes() == before and os.listdir(run) == ["metrics.jsonl"]


# --- kind 9: every failure is one line, exit 2, before any work ----


def test_output_folder_below_a_file_is_refused_first(model, speech, generator, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x", encoding="utf-8")
    below = blocker / "sub"
    why = f"output directory {below} cannot be created: {blocker} is a file"
    one_line_exit_2(invoke("vocode", model, speech, "-o", below), why)
    one_line_exit_2(invoke("mel", speech, "--profile", "hifigan", "-o", below), why)
    one_line_exit_2(invoke("generate", generator, "-n", "1", "-o", below), why)
    one_line_exit_2(invoke("demo", "-o", below, "--model", model), why)
    single = f"output directory {below} cannot be created: {blocker} is a file"
    one_line_exit_2(invoke("export", model, below / "x.safetensors"), single)
    one_line_exit_2(invoke("evaluate", tmp_path, tmp_path, "--json", below / "s.json"), single)
    one_line_exit_2(invoke("prepare", "folder", speech.parent, "--out", below), single)
    one_line_exit_2(
        invoke("search-schedule", model, "--steps", "2", "--manifest", "m.jsonl",
               "-o", below / "x.safetensors"),
        single,
    )  # fmt: skip
    from .test_train import RECIPE

    one_line_exit_2(invoke("train", RECIPE, "--run-dir", below), single)
    assert blocker.read_text(encoding="utf-8") == "x"


def test_unwritable_output_folder_is_refused_first(model, speech, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o555)
    else:  # root writes anywhere: make the permission check see a read-only folder
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode)
        )
    try:
        result = invoke("vocode", model, speech, "-o", locked)
        one_line_exit_2(result, f"output directory {locked} is not writable")
        result = invoke("vocode", model, speech, "-o", locked / "new")
        one_line_exit_2(result, f"output directory {locked / 'new'} cannot be created: {locked}")
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    ("device", "text"),
    [
        ("tpu", "--device 'tpu' is not a device; use cpu, cuda, cuda:N or mps"),
        ("cuda", "--device is 'cuda' but CUDA is not available here"),
        ("cuda:7", "--device is 'cuda:7' but"),
        ("mps", "--device is 'mps' but MPS is not available here"),
    ],
)
def test_bad_device_is_refused_before_anything_loads(device, text, tmp_path, speech):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    missing = tmp_path / "no-model.safetensors"  # the device is refused before the model is read
    out = tmp_path / "out"
    for cmd in (["vocode", missing, speech], ["generate", missing]):
        one_line_exit_2(invoke(*cmd, "-o", out, "--device", device), text)
    assert not out.exists()


def test_text_file_as_checkpoint_is_one_line(text_checkpoint, speech, tmp_path):
    why = "IndexError: pop from empty list"
    out = tmp_path / "out"
    one_line_exit_2(invoke("vocode", text_checkpoint, speech, "-o", out), why)
    one_line_exit_2(invoke("generate", text_checkpoint, "-o", out), why)
    one_line_exit_2(invoke("export", text_checkpoint, tmp_path / "x.safetensors"), why)
    result = invoke("import-diffwave", text_checkpoint, tmp_path / "y.safetensors")
    one_line_exit_2(result, f"{text_checkpoint} is not a loadable torch checkpoint: {why}")
    keyerror = tmp_path / "hello.pt"
    keyerror.write_text("hello\n", encoding="utf-8")
    one_line_exit_2(invoke("vocode", keyerror, speech, "-o", out), "KeyError")
    assert not out.exists() and not (tmp_path / "x.safetensors").exists()
    assert not (tmp_path / "y.safetensors").exists()


def test_search_schedule_refuses_the_output_kind_before_searching(tiny_config, tmp_path, speech):
    run = _run_dir(tiny_config, tmp_path / "run")
    manifest = tmp_path / "val.jsonl"
    manifest.write_text(f'{{"path": "{speech}", "duration_s": 0.3}}\n', encoding="utf-8")
    result = invoke("search-schedule", run, "--steps", "2", "--manifest", manifest,
                    "-o", tmp_path / "x.safetensors")  # fmt: skip
    # One line: not a single candidate was scored (the search logs one row per candidate).
    one_line_exit_2(result, "is a checkpoint but")
    assert "x.safetensors would be an export" in result.output
    assert not (tmp_path / "x.safetensors").exists()
    one_line_exit_2(
        invoke(
            "search-schedule", run, "--steps", "0", "--manifest", manifest, "-o", tmp_path / "y.pt"
        ),
        "--steps and --max-clips must be at least 1, got 0 and 4",
    )


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--seconds", "0.00001"], "--seconds 1e-05 is 0 samples at 22050 Hz; the shortest output "
         "is one hop, 256 samples (0.0116 s)"),
        (["--seconds", "0.01"], "--seconds 0.01 is 220 samples at 22050 Hz"),
        (["--seconds", "0"], "--seconds must be a positive number, got 0.0"),
        (["--seconds", "inf"], "--seconds must be a positive number, got inf"),
        (["--seconds", "nan"], "--seconds must be a positive number, got nan"),
        (["-n", "0"], "-n must be at least 1, got 0"),
        (["-n", "-2"], "-n must be at least 1, got -2"),
        (["--label", "1"], "this model has no labels"),
        (["--steps", "4"], "fixed 6-step schedule"),
        (["--guidance", "-1"], "--guidance must be >= 0, got -1.0"),
        (["--guidance", "1"], "--guidance 1.0 needs --label"),
    ],
)  # fmt: skip
def test_generate_refuses_lengths_counts_and_settings_first(generator, tmp_path, args, text):
    out = tmp_path / "out"
    one_line_exit_2(invoke("generate", generator, "-o", out, *args), text)
    assert not out.exists()


def test_generate_mel_model_refuses_a_length_under_one_frame(tiny_config, model, tmp_path):
    mel = random_export(
        apply_overrides(tiny_config, ["model.domain=mel", "model.conditioning=none"]),
        tmp_path / "mel.safetensors",
    )
    out = tmp_path / "out"
    result = invoke("generate", mel, "--vocoder", model, "--seconds", "0.005", "-o", out)
    one_line_exit_2(result, "--seconds 0.005 is 110 samples at 22050 Hz; the shortest output")
    assert not out.exists()


def test_vocode_refuses_sampler_settings_before_reading_inputs(model, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "never-read.wav"  # exists, but is no audio: reading it would fail
    missing.write_text("not audio")
    one_line_exit_2(invoke("vocode", model, missing, "-o", out, "--steps", "4"), "fixed 6-step")
    assert not out.exists()


def test_vocode_refuses_refinement_of_a_waveform_model_before_reading_inputs(model, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "never-read.wav"  # exists, but is no audio: reading it would fail
    missing.write_text("not audio")
    result = invoke("vocode", model, missing, "-o", out, "--griffin-lim-iters", "8")
    one_line_exit_2(result, "stft-domain model")
    result = invoke("vocode", model, missing, "-o", out, "--method", "griffin-lim",
                    "--mel-match-iters", "4")  # fmt: skip
    one_line_exit_2(result, "for --method diffusion")
    assert not out.exists()


def test_demo_refuses_steps_before_writing(model, tmp_path):
    out = tmp_path / "demo"
    one_line_exit_2(invoke("demo", "-o", out, "--model", model, "--steps", "4"), "fixed 6-step")
    assert not out.exists()


def test_strict_load_error_keeps_the_unexpected_key(tiny_config, tmp_path, speech):
    from safetensors.torch import load_file, save_file

    from audiodiff.checkpoint import load_export

    path = random_export(tiny_config, tmp_path / "m.safetensors")
    tensors = load_file(str(path))
    tensors["extra_head.weight"] = torch.zeros(3)
    metadata = load_export(path)[2]
    save_file(tensors, str(tmp_path / "extra.safetensors"), metadata=metadata)
    result = invoke("vocode", tmp_path / "extra.safetensors", speech, "-o", tmp_path / "out")
    one_line_exit_2(result, "weights do not fit the stored config")
    assert '"extra_head.weight"' in result.output  # after the first line of torch's message


def test_fail_joins_every_line():
    from click.testing import CliRunner

    from audiodiff.cli import main

    @main.command("_multi_line_for_test", hidden=True)
    def _multi() -> None:
        from audiodiff.cli import fail

        fail("first line\n\tsecond: the useful part\n\n")

    try:
        result = CliRunner().invoke(main, ["_multi_line_for_test"])
    finally:
        main.commands.pop("_multi_line_for_test")
    assert result.exit_code == 2
    assert result.output == "audiodiff: error: first line; second: the useful part\n"


def test_bad_yaml_names_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n", encoding="utf-8")
    result = invoke("train", bad, "--run-dir", tmp_path / "r")
    one_line_exit_2(result, "not valid YAML")
    assert "line 2, column 1" in result.output


def test_wav_length_of_a_generated_clip_is_untouched_by_checks(generator, tmp_path):
    """The checks refuse nothing valid: exactly one hop is allowed."""
    out = tmp_path / "out"
    result = invoke("generate", generator, "-n", "1", "--seconds", str(256 / 22050), "-o", out,
                    "--sampler", "ddim", "--steps", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sf.info(out / "sample_000.wav").frames == 256
    assert np.isfinite(sf.read(out / "sample_000.wav")[0]).all()


def test_search_schedule_in_place_refuses_run_dirs_and_shipped_models(tiny_config, tmp_path):
    run = _run_dir(tiny_config, tmp_path / "run")
    manifest = tmp_path / "val.jsonl"
    manifest.write_text("", encoding="utf-8")
    result = invoke("search-schedule", run, "--steps", "2", "--manifest", manifest, "--in-place")
    one_line_exit_2(result, f"not the run directory {run}; give {run / 'step_00000003.pt'}")
    from audiodiff.pretrained import SHIPPED_DIR

    shipped = SHIPPED_DIR / "small-speech.safetensors"
    before = shipped.stat().st_mtime_ns
    result = invoke("search-schedule", "small-speech", "--steps", "2", "--manifest", manifest,
                    "--in-place")  # fmt: skip
    one_line_exit_2(result, "--in-place would rewrite the shipped model")
    assert shipped.stat().st_mtime_ns == before


def test_mel_refuses_a_missing_input_before_writing_any(speech, tmp_path):
    out = tmp_path / "mels"
    result = invoke("mel", speech, tmp_path / "gone.wav", "--profile", "hifigan", "-o", out)
    one_line_exit_2(result, f"{tmp_path / 'gone.wav'} does not exist")
    assert not out.exists()  # (speech.npy used to be written before the refusal)


def test_missing_inputs_are_refused_before_any_model_or_scorer_loads(speech, tmp_path, monkeypatch):
    # A mistyped name used to cost a model load first (10 s in a fresh process for vocode).
    import audiodiff.evaluation
    import audiodiff.pretrained
    import audiodiff.vocoder

    def loaded(*args, **kwargs):
        raise AssertionError("loaded before the inputs were checked")

    monkeypatch.setattr(audiodiff.vocoder.Vocoder, "from_pretrained", loaded)
    monkeypatch.setattr(audiodiff.pretrained, "load_model_source", loaded)
    monkeypatch.setattr(audiodiff.evaluation, "evaluate_dirs", loaded)
    gone = tmp_path / "gone.wav"
    one_line_exit_2(
        invoke("vocode", "small-speech", speech, gone, tmp_path, "-o", tmp_path / "out"),
        f"input file {gone} does not exist; input {tmp_path} is not a file",
    )
    one_line_exit_2(
        invoke("vocode", "small-speech", tmp_path, "-o", tmp_path / "out"),
        f"input {tmp_path} is not a file",
    )
    one_line_exit_2(
        invoke("mel", gone, "--from", "small-speech", "-o", tmp_path / "out"),
        f"input file {gone} does not exist",
    )
    one_line_exit_2(invoke("evaluate", tmp_path, speech), f"generated {speech} is not a directory")
    assert not (tmp_path / "out").exists()


def test_library_writers_refuse_their_own_source(tiny_config, tmp_path):
    """The APIs behind export and import-diffwave refuse too, not only the CLI."""
    from audiodiff.checkpoint import export_safetensors
    from audiodiff.diffwave_import import import_diffwave

    from .test_diffwave_import import _params, _save_like_lmnt, lmnt_state_dict

    run = _run_dir(tiny_config, tmp_path / "run")
    step = run / "step_00000003.pt"
    before = step.read_bytes()
    with pytest.raises(ValueError, match="is an input of this run"):
        export_safetensors(run, step, overwrite=True)
    src = _save_like_lmnt(tmp_path / "w.safetensors", lmnt_state_dict(), _params())
    weights = src.read_bytes()
    with pytest.raises(ValueError, match="is an input of this run"):
        import_diffwave(src, src, overwrite=True)
    assert step.read_bytes() == before and src.read_bytes() == weights


def test_a_bad_later_input_leaves_no_output_folder(model, speech, tmp_path, monkeypatch):
    """vocode and mel read and check every input before they create anything (was: the output
    folder was made, then the second input refused)."""
    short = tmp_path / "short.wav"
    sf.write(short, chirp_plus_noise(22050, 0.004), 22050)  # 88 samples: under one window
    for command in (
        ("vocode", model, speech, short, "-o", tmp_path / "voc"),
        ("mel", speech, short, "--profile", "hifigan", "-o", tmp_path / "mels"),
    ):
        result = invoke(*command)
        one_line_exit_2(result, f"{short}: audio has 88 samples (0.0040 s at 22050 Hz) but the")
        assert "needs at least 385 (0.0175 s)" in result.output
    assert not (tmp_path / "voc").exists() and not (tmp_path / "mels").exists()
    # A missing manifest is refused before the run directory exists, naming the folder that a
    # relative path was taken from.
    from .test_train import RECIPE

    monkeypatch.chdir(tmp_path)
    result = invoke("train", RECIPE, "--run-dir", tmp_path / "run", "--set",
                    "data.train_manifest=data/lj/train.jsonl")  # fmt: skip
    one_line_exit_2(
        result,
        f"data.train_manifest data/lj/train.jsonl does not exist (relative to the current folder "
        f"{tmp_path}); run from the folder you ran prepare in, or pass --set "
        "data.train_manifest=PATH",
    )
    assert not (tmp_path / "run").exists()


def test_griffin_lim_refuses_diffusion_settings(model, speech, tmp_path):
    result = invoke("vocode", model, speech, "-o", tmp_path / "gl", "--method", "griffin-lim",
                    "--steps", "3")  # fmt: skip
    one_line_exit_2(result, "are for --method diffusion, not griffin-lim")
    assert not (tmp_path / "gl").exists()


def test_a_report_in_a_scored_folder_can_be_replaced(tmp_path):
    """evaluate --json into the generated folder refuses the audio it scores, not an earlier
    report (was: the second run refused its own report as an input, even with --overwrite)."""
    for folder in ("ref", "gen"):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "a.wav", chirp_plus_noise(22050, 0.3), 22050)
    report = tmp_path / "gen" / "report.json"
    args = ("evaluate", tmp_path / "ref", tmp_path / "gen", "--json", report, "--no-pesq")
    assert invoke(*args).exit_code == 0
    again = invoke(*args, "--overwrite")
    assert again.exit_code == 0, again.output
    one_line_exit_2(
        invoke(
            "evaluate",
            tmp_path / "ref",
            tmp_path / "gen",
            "--json",
            tmp_path / "gen" / "a.wav",
            "--overwrite",
            "--no-pesq",
        ),  # fmt: skip
        "is an input of this run",
    )


def test_an_output_that_is_a_folder_is_refused_before_work(tmp_path):
    from audiodiff.files import plan_outputs

    (tmp_path / "o" / "a.wav").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"output .*a\.wav is a directory"):
        plan_outputs(tmp_path / "o", ["a.wav"], overwrite=True)


def test_every_problem_of_a_command_line_is_named_at_once(tmp_path, monkeypatch):
    """Three inputs with one stem used to take three runs to learn every collision (each refusal
    named the first); missing inputs and colliding outputs come in one line, before any load."""
    import audiodiff.vocoder
    from audiodiff.files import plan_outputs

    def loaded(*args, **kwargs):
        raise AssertionError("loaded before the command line was checked")

    monkeypatch.setattr(audiodiff.vocoder.Vocoder, "from_pretrained", loaded)
    names = ["x.mp3", "x.flac", "x.ogg", "y.wav", "y.ogg"]
    for name in names:
        (tmp_path / name).write_bytes(b"")  # only their names are read before the refusal
    inputs = [tmp_path / n for n in names]
    out = tmp_path / "o2"
    one_line_exit_2(
        invoke(
            "vocode",
            "small-speech",
            *inputs,
            tmp_path / "gone.wav",
            tmp_path / "lost.wav",
            "-o",
            out,
        ),  # fmt: skip
        f"input file {tmp_path / 'gone.wav'} does not exist; input file {tmp_path / 'lost.wav'} "
        f"does not exist; inputs 1, 2 and 3 would all write {out / 'x.wav'}; inputs 4 and 5 "
        f"would both write {out / 'y.wav'}",
    )
    one_line_exit_2(
        invoke("mel", *inputs, "-o", out),
        f"inputs 1, 2 and 3 would all write {out / 'x.npz'}; inputs 4 and 5 would both write",
    )
    one_line_exit_2(  # and the options that are wrong on their own, in the same line
        invoke(
            "vocode",
            "small-speech",
            inputs[0],
            tmp_path / "gone.wav",
            "-o",
            out,
            "--batch-size",
            "0",
            "--method",
            "griffin-lim",
            "--steps",
            "3",
        ),  # fmt: skip
        f"input file {tmp_path / 'gone.wav'} does not exist; --batch-size must be at least 1, "
        "got 0; --steps, --sampler, --mel-match-iters, --griffin-lim-iters and --magnitude-blend "
        "are for --method diffusion, not griffin-lim",
    )
    one_line_exit_2(
        invoke("evaluate", tmp_path / "refs", tmp_path / "gen"),
        f"reference directory {tmp_path / 'refs'} does not exist; generated directory",
    )
    assert not out.exists()
    # The library's planner, behind every command's outputs, names them all too.
    with pytest.raises(ValueError, match=r"inputs 1 and 3 would both write .*a\.wav; inputs 2 "):
        plan_outputs(out, ["a.wav", "b.wav", "a.wav", "b.wav"], overwrite=False)
    out.mkdir()
    for name in ("a.wav", "b.wav"):
        (out / name).write_bytes(b"")
    with pytest.raises(
        FileExistsError, match=r"a\.wav exists, and so do .*b\.wav; pass --overwrite"
    ):
        plan_outputs(out, ["a.wav", "b.wav", "c.wav"], overwrite=False)
