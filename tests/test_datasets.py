"""Dataset layout readers and `prepare`: each published layout is rebuilt in a temporary folder
from tiny synthetic clips, with broken, missing and unlisted files and files at other rates and
channel counts, then the manifests and the report are checked."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from audiodiff.cli import main
from audiodiff.datasets import (
    GTZAN_GENRES,
    SC09_WORDS,
    format_summary,
    prepare,
    prepare_options,
    probe_audio,
    ranked_split,
)

from .conftest import chirp_plus_noise

CLIP_S = 0.25  # every clip is short: the whole file runs in a couple of seconds


def clip(root: Path, rel: str, sample_rate: int = 22050, duration_s: float = CLIP_S,
         channels: int = 1, seed: int = 0) -> Path:  # fmt: skip
    """Write a chirp in the format its extension names (wav/flac PCM_16, ogg vorbis, mp3, au).

    The noise depends on ``rel`` too: two files are different recordings (prepare keeps identical
    clips in one split), unless a test copies one on purpose."""
    x = chirp_plus_noise(sample_rate, duration_s, seed + zlib.crc32(rel.encode()))
    data = np.stack([x * (1.0 - 0.3 * c) for c in range(channels)], axis=1)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sample_rate)
    return path


def silent(root: Path, rel: str, sample_rate: int = 22050, n_frames: int = 5000) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(n_frames, dtype=np.float32), sample_rate)
    return path


def garbage(root: Path, rel: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(64)))
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}  # fmt: skip


def manifests(out: Path) -> dict[str, list[dict]]:
    return {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]
        for s in ("train", "val", "test")
    }


def by_name(rows: dict[str, list[dict]]) -> dict[str, dict]:
    return {Path(r["path"]).name: r for split_rows in rows.values() for r in split_rows}


# --------------------------------------------------------------------------------------------------
# Layout builders (also used by tests/test_recipes.py to train each recipe family)
# --------------------------------------------------------------------------------------------------


def build_ljspeech(root: Path) -> Path:
    rows = []
    for i in range(1, 9):
        clip(root, f"wavs/LJ001-{i:04d}.wav", seed=i)
        rows.append(f"LJ001-{i:04d}|Text {i}, raw.|Text {i}, normalised.")
    rows[1] = "LJ001-0002|Only the raw text."  # a row without the normalised column
    clip(root, "wavs/LJ001-0009.wav", sample_rate=44100, channels=2)  # other rate and channels
    silent(root, "wavs/LJ001-0010.wav")
    clip(root, "wavs/LJ001-0011.wav", duration_s=0.05)  # shorter than min_duration_s
    garbage(root, "wavs/LJ001-0012.wav")
    silent(root, "wavs/LJ001-0013.wav", n_frames=0)  # a header and no samples
    clip(root, "wavs/LJ050-0001.wav")  # on disk, in no metadata row
    rows += [f"LJ001-{i:04d}|t|t" for i in range(9, 14)] + ["LJ999-0001|gone|gone"]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def build_vctk(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "speaker-info.txt").write_text(
        "ID  AGE  GENDER  ACCENTS  REGION COMMENTS \n"
        "p225  23  F    English    Southern  England\n"
        "p300  23  F    American    San Francisco\n"
        "p301  23  F    American    North Carolina\n"
        "p315  18  M    American    Connecticut  (Text missing)\n"
    )
    texts = {"p225": 2, "p300": 4, "p301": 4}
    for speaker, n in texts.items():
        for i in range(1, n + 1):
            (root / "txt" / speaker).mkdir(parents=True, exist_ok=True)
            (root / "txt" / speaker / f"{speaker}_{i:03d}.txt").write_text(f"{speaker} says {i}.\n")
            mics = ("mic1",) if speaker == "p301" else ("mic1", "mic2")  # like p280: no mic2
            for mic in mics:
                rate = 44100 if (speaker, i) == ("p300", 4) else 48000
                clip(root, f"wav48_silence_trimmed/{speaker}/{speaker}_{i:03d}_{mic}.flac", rate,
                     seed=i)  # fmt: skip
    (root / "txt" / "p300" / "p300_009.txt").write_text("No audio for this one.\n")
    clip(root, "wav48_silence_trimmed/p315/p315_001_mic1.flac", 48000)  # p315 has no text
    return root


def build_libritts(root: Path) -> Path:
    base = root / "LibriTTS"
    chapter = "train-clean-100/19/198"
    clip(base, f"{chapter}/19_198_000000_000000.wav", 24000)
    (base / chapter / "19_198_000000_000000.normalized.txt").write_text("First sentence.")
    (base / chapter / "19_198_000000_000000.original.txt").write_text("First sentence!")
    clip(base, f"{chapter}/19_198_000000_000001.wav", 24000, seed=1)  # text only in trans.tsv
    (base / chapter / "19_198.trans.tsv").write_text(
        "19_198_000000_000000\tFirst sentence!\tFirst sentence.\n"
        "19_198_000000_000001\tSecond, Mr. X.\tSecond, Mister X.\n"
        "19_198_000000_000002\tNo audio.\tNo audio.\n"
    )
    clip(base, "train-clean-100/26/495/26_495_000004_000000.wav", 24000, seed=2)  # no text at all
    clip(base, "dev-clean/84/121/84_121_000000_000000.wav", 16000)  # other rate
    (base / "dev-clean/84/121/84_121_000000_000000.normalized.txt").write_text("Dev text.")
    clip(base, "test-clean/1089/134686/1089_134686_000001_000000.wav", 24000, channels=2)
    (base / "test-clean/1089/134686/1089_134686_000001_000000.normalized.txt").write_text("Test.")
    return root


def build_sc09(root: Path) -> Path:
    for word in SC09_WORDS:
        for speaker in ("aaaa1111", "bbbb2222"):
            clip(root, f"{word}/{speaker}_nohash_0.wav", 16000, seed=len(word))
    clip(root, "four/cccc3333_nohash_1.wav", 8000)  # other rate
    clip(root, "yes/aaaa1111_nohash_0.wav", 16000)  # not a digit: ignored
    clip(root, "_background_noise_/white_noise.wav", 16000, duration_s=0.5)  # ignored
    (root / "validation_list.txt").write_text("three/aaaa1111_nohash_0.wav\nyes/x_nohash_0.wav\n")
    (root / "testing_list.txt").write_text(
        "nine/bbbb2222_nohash_0.wav\nfive/dddd4444_nohash_0.wav\n"  # the second one is absent
    )
    return root


def build_maestro(root: Path) -> Path:
    header = "canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration"
    rows = [
        ("train", "2018/MIDI-a.wav", 44100),
        ("train", "2018/MIDI-b.wav", 48000),
        ("validation", "2017/MIDI-c.wav", 44100),
        ("test", "2017/MIDI-d.wav", 44100),
        ("train", "2015/MIDI-e.wav", None),  # listed, not downloaded
    ]
    lines = [header]
    for i, (split, audio, rate) in enumerate(rows):
        lines.append(f'Chopin,"Sonata No. {i}, Op. 35",{split},{audio[:4]},'
                     f"{audio[:-4]}.midi,{audio},{CLIP_S}")  # fmt: skip
        if rate:
            clip(root, audio, rate, channels=2, seed=i)
    (root / "maestro-v3.0.0.csv").write_text("\n".join(lines) + "\n")
    clip(root, "2018/MIDI-not-in-csv.wav", 44100, channels=2)
    return root


def build_gtzan(root: Path) -> Path:
    base = root / "genres_original"
    for genre, numbers in (("blues", (0, 85, 95)), ("jazz", (0, 81))):
        for n in numbers:
            clip(base, f"{genre}/{genre}.{n:05d}.wav", 22050, seed=n)
    garbage(base, "jazz/jazz.00054.wav")  # as in the Kaggle release
    clip(base, "blues/notes.wav")  # not a GTZAN track name
    return root


def build_folder(root: Path) -> Path:
    clip(root, "speech/a.wav", 22050)
    clip(root, "speech/b.flac", 44100, channels=2, seed=1)
    clip(root, "music/c.ogg", 48000, seed=2)
    clip(root, "music/deep/d.mp3", 44100, duration_s=0.5, seed=3)
    clip(root, "top.wav", 16000, seed=4)
    garbage(root, "music/broken.wav")
    garbage(root, "speech/._a.wav")  # macOS resource fork: hidden, not audio
    clip(root, ".cache/x.wav")  # hidden folder
    (root / "speech" / "readme.txt").write_text("not audio")
    return root


def build_klettres(root: Path) -> Path:
    def sounds(lang: str, entries: list[tuple[str, str]]) -> None:
        body = "".join(f'  <sound name="{n}" file="{f}" />\n' for n, f in entries)
        (root / lang).mkdir(parents=True, exist_ok=True)
        (root / lang / "sounds.xml").write_text(
            f'<!-- comment -->\n<klettres><language code="{lang}"><alphabet>\n{body}'
            "</alphabet></language></klettres>\n",
            encoding="utf-8",
        )

    sounds("en", [("A", "en/alpha/A.ogg"), ("B", "en/alpha/B.ogg"), ("BA", "en/syllab/ba.ogg")])
    clip(root, "en/alpha/A.ogg", 44100, duration_s=0.4)
    clip(root, "en/syllab/ba.ogg", 44100, channels=2, seed=1)
    clip(root, "en/alpha/C.ogg", 44100, seed=2)  # named by no sounds.xml row
    sounds("cs", [("Á", "cs/alpha/a.ogg")])
    clip(root, "cs/alpha/a.ogg", 44100, seed=3)
    sounds("da", [("A", "da/alpha/a-0.wav"), ("B", "da/alpha/a-1.ogg")])
    clip(root, "da/alpha/a-0.wav", 128000)  # the wrong 128 kHz header of the Danish files
    clip(root, "da/alpha/a-1.ogg", 44100, seed=4)
    sounds("id", [("A", "id/alpha/a.wav")])  # klettres-data ships no Indonesian audio
    return root


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "ljspeech": build_ljspeech, "vctk": build_vctk, "libritts": build_libritts,
    "sc09": build_sc09, "maestro": build_maestro, "gtzan": build_gtzan,
    "folder": build_folder, "klettres": build_klettres,
}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# One test per layout
# --------------------------------------------------------------------------------------------------


def test_ljspeech(tmp_path):
    root = build_ljspeech(tmp_path / "LJSpeech-1.1")
    before = snapshot(root)
    opts = prepare_options(val_fraction=0.2, test_fraction=0.2)
    report = prepare("ljspeech", root, tmp_path / "out", opts)
    assert snapshot(root) == before  # the dataset folder is never written
    assert report["files_found"] == 14
    assert report["clips"] == {"train": 6, "val": 2, "test": 2}  # exact ranked counts of 10
    rows = by_name(manifests(tmp_path / "out"))
    assert rows["LJ001-0001.wav"]["text"] == "Text 1, normalised."
    assert rows["LJ001-0002.wav"]["text"] == "Only the raw text."
    assert "text" not in rows["LJ050-0001.wav"]  # unlisted files are kept, without text
    assert (
        rows["LJ001-0009.wav"]["sample_rate"] == 44100 and rows["LJ001-0009.wav"]["channels"] == 2
    )
    assert rows["LJ001-0001.wav"]["duration_s"] == pytest.approx(CLIP_S, abs=1e-4)
    assert report["missing_files"] == ["metadata.csv: LJ999-0001"]
    assert report["unlisted_files"] == ["wavs/LJ050-0001.wav"]
    skipped = {k: [x["path"] for x in v] for k, v in report["skipped"].items()}
    assert skipped == {
        "empty": ["wavs/LJ001-0013.wav"],
        "silent": ["wavs/LJ001-0010.wav"],
        "too_short": ["wavs/LJ001-0011.wav"],
        "unreadable": ["wavs/LJ001-0012.wav"],
    }
    assert report["sample_rates"] == {"22050": 12, "44100": 1}
    assert report["channels"] == {"1": 12, "2": 1}
    hours = sum(r["duration_s"] for r in rows.values()) / 3600
    assert sum(report["hours"].values()) == pytest.approx(hours, abs=1e-4)
    on_disk = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))

    # Deterministic: a second run gives byte-identical files; the default 1% / 3% of 10 clips round
    # to zero but a positive fraction always gets one clip; another seed picks other clips.
    prepare("ljspeech", root, tmp_path / "again", opts)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "prepare_report.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    default = prepare("ljspeech", root, tmp_path / "dflt")
    assert default["clips"] == {"train": 8, "val": 1, "test": 1}
    reseeded = prepare("ljspeech", root, tmp_path / "s7", replace_opts(opts, seed=7))
    assert reseeded["clips"] == report["clips"]
    assert manifests(tmp_path / "s7")["val"] != manifests(tmp_path / "out")["val"]


def replace_opts(opts, **changes):
    import dataclasses

    return dataclasses.replace(opts, **changes)


def test_vctk_holds_out_speakers_and_picks_the_mic(tmp_path):
    root = build_vctk(tmp_path / "VCTK-Corpus-0.92")
    report = prepare("vctk", root, tmp_path / "out", prepare_options(val_fraction=0.25))
    rows = manifests(tmp_path / "out")
    assert {r["speaker"] for r in rows["test"]} == {"p225"}  # held out: an unseen voice
    assert report["clips"] == {"train": 7, "val": 2, "test": 2}
    assert report["speakers"] == {"train": 3, "val": 2, "test": 1}
    assert all(r["path"].endswith("_mic1.flac") for s in rows.values() for r in s)
    named = by_name(rows)
    assert named["p300_001_mic1.flac"]["text"] == "p300 says 1."
    assert "text" not in named["p315_001_mic1.flac"]
    assert report["missing_files"] == ["txt/p300/p300_009.txt"]
    assert report["unlisted_files"] == ["wav48_silence_trimmed/p315/p315_001_mic1.flac"]
    assert report["sample_rates"] == {"44100": 1, "48000": 10}

    mic2 = prepare("vctk", root, tmp_path / "mic2", prepare_options(mic="mic2", holdout=("p300",)))
    assert mic2["files_found"] == 6
    assert mic2["clips"]["test"] == 4  # p300 held out instead
    assert len(mic2["missing_files"]) == 5  # p301 has no mic2, p300_009 has no audio at all
    assert any("none of the held-out" in n for n in prepare(
        "vctk", root, tmp_path / "none", prepare_options(holdout=("p999",)))["notes"])  # fmt: skip


def test_libritts_subsets_are_the_splits(tmp_path):
    root = build_libritts(tmp_path / "dl")
    report = prepare("libritts", root, tmp_path / "out")
    rows = manifests(tmp_path / "out")
    assert report["clips"] == {"train": 3, "val": 1, "test": 1}
    named = by_name(rows)
    assert named["19_198_000000_000000.wav"]["text"] == "First sentence."
    assert named["19_198_000000_000001.wav"]["text"] == "Second, Mister X."  # from trans.tsv
    assert "text" not in named["26_495_000004_000000.wav"]
    assert named["84_121_000000_000000.wav"]["speaker"] == "84"
    assert report["speakers"] == {"train": 2, "val": 1, "test": 1}
    assert report["missing_files"] == ["train-clean-100: 19_198_000000_000002"]
    assert report["unlisted_files"] == ["LibriTTS/train-clean-100/26/495/26_495_000004_000000.wav"]
    assert report["sample_rates"] == {"16000": 1, "24000": 4}
    assert report["channels"] == {"1": 4, "2": 1}
    with pytest.raises(ValueError, match="decides its val split"):
        prepare("libritts", root, tmp_path / "bad", prepare_options(val_fraction=0.1))


def test_sc09_official_lists_and_digit_labels(tmp_path):
    root = build_sc09(tmp_path / "speech_commands_v0.02")
    report = prepare("sc09", root, tmp_path / "out")
    rows = manifests(tmp_path / "out")
    assert report["clips"] == {"train": 19, "val": 1, "test": 1}
    assert [Path(r["path"]).relative_to(root).as_posix() for r in rows["val"]] == [
        "three/aaaa1111_nohash_0.wav"
    ]
    for row in (r for s in rows.values() for r in s):
        word = Path(row["path"]).parent.name
        assert row["label"] == SC09_WORDS.index(word) and row["text"] == word
        assert row["speaker"] == Path(row["path"]).name.split("_nohash_")[0]
    assert report["label_names"] == list(SC09_WORDS)
    assert report["missing_files"] == ["list: five/dddd4444_nohash_0.wav"]
    assert report["sample_rates"] == {"8000": 1, "16000": 20}
    (root / "testing_list.txt").unlink()
    with pytest.raises(ValueError, match="testing_list.txt"):
        prepare("sc09", root, tmp_path / "bad")


def test_maestro_csv_split_and_stereo(tmp_path):
    root = build_maestro(tmp_path / "maestro-v3.0.0")
    report = prepare("maestro", root, tmp_path / "out")
    assert report["clips"] == {"train": 2, "val": 1, "test": 1}
    assert report["channels"] == {"2": 4} and report["sample_rates"] == {"44100": 3, "48000": 1}
    assert report["missing_files"] == ["maestro-v3.0.0.csv: 2015/MIDI-e.wav"]
    assert report["unlisted_files"] == ["2018/MIDI-not-in-csv.wav"]
    assert "MIDI-not-in-csv.wav" not in by_name(manifests(tmp_path / "out"))  # no split: unused
    csv_path = root / "maestro-v3.0.0.csv"
    csv_path.write_text(csv_path.read_text().replace(",validation,", ",dev,"))
    with pytest.raises(ValueError, match="'dev'"):
        prepare("maestro", root, tmp_path / "bad")


def test_gtzan_genres_numbered_split_and_the_corrupt_jazz_file(tmp_path):
    root = build_gtzan(tmp_path / "gtzan")
    report = prepare("gtzan", root, tmp_path / "out")
    rows = by_name(manifests(tmp_path / "out"))
    assert report["clips"] == {"train": 2, "val": 2, "test": 1}
    assert rows["blues.00085.wav"]["split"] == "val" and rows["blues.00095.wav"]["split"] == "test"
    assert rows["jazz.00081.wav"]["label"] == GTZAN_GENRES.index("jazz")
    (bad,) = report["skipped"]["unreadable"]
    assert bad["path"] == "genres_original/jazz/jazz.00054.wav"
    assert "known corrupt" in bad["reason"]
    assert report["unlisted_files"] == ["genres_original/blues/notes.wav"]
    assert "blues/blues.00001" in report["missing_files"]
    assert "rock/ (whole genre folder)" in report["missing_files"]
    assert len(report["missing_files"]) == 97 + 97 + 8

    # The marsyas tarball: genres/GENRE/GENRE.000NN.au
    clip(tmp_path / "marsyas", "genres/rock/rock.00001.au")
    old = prepare("gtzan", tmp_path / "marsyas", tmp_path / "out_au")
    assert old["clips"]["train"] == 1 and old["label_names"][9] == "rock"


def test_folder_any_tree_with_optional_folder_labels(tmp_path):
    root = build_folder(tmp_path / "audio")
    report = prepare("folder", root, tmp_path / "out")
    assert report["files_found"] == 6  # hidden files, hidden folders and readme.txt are not audio
    assert report["clips"] == {"train": 3, "val": 1, "test": 1}  # 5% of 5, at least one
    assert report["skipped"]["unreadable"][0]["path"] == "music/broken.wav"
    assert report["sample_rates"] == {"16000": 1, "22050": 1, "44100": 2, "48000": 1}

    opts = prepare_options(val_fraction=0.4, test_fraction=0.2)
    split = prepare("folder", root, tmp_path / "split", opts)
    assert split["clips"] == {"train": 2, "val": 2, "test": 1}

    labelled = prepare("folder", root, tmp_path / "lab", prepare_options(label_from_folder=True))
    assert labelled["label_names"] == ["deep", "music", "speech"]
    assert labelled["unlisted_files"] == ["top.wav"]
    rows = by_name(manifests(tmp_path / "lab"))
    assert (
        rows["b.flac"]["label"] == 2 and rows["c.ogg"]["label"] == 1 and rows["d.mp3"]["label"] == 0
    )

    workers = prepare("folder", root, tmp_path / "par", prepare_options(workers=2))
    assert workers["clips"] == report["clips"]
    assert (tmp_path / "par" / "train.jsonl").read_text() == (
        tmp_path / "out" / "train.jsonl"
    ).read_text()


def build_linked_speakers(tmp_path: Path) -> Path:
    """Three speaker folders of 5, 4 and 4 clips; two are symlinks to folders kept elsewhere, plus
    a link to an ancestor (a loop) and a broken link."""
    root = tmp_path / "speakers"
    for i in range(5):
        clip(root, f"alice/{i}.wav", seed=i)
    for name in ("bob", "carol"):
        for i in range(4):
            clip(tmp_path / "store", f"{name}/{i}.flac", seed=10 + i + len(name))
        (root / name).symlink_to(tmp_path / "store" / name, target_is_directory=True)
    (root / "alice" / "up").symlink_to("..", target_is_directory=True)  # a loop
    (root / "dave").symlink_to(tmp_path / "nowhere", target_is_directory=True)  # broken
    return root


def test_folder_follows_symlinked_folders_and_reports_refused_links(tmp_path):
    """Issue 11 kind 5: two of three speaker folders are symlinks; all 13 files are found (the
    bug: 5, one speaker's labels only), the loop is not followed twice, and the loop and the
    broken link are reported and printed."""
    root = build_linked_speakers(tmp_path)
    opts = prepare_options(label_from_folder=True, val_fraction=0, test_fraction=0)
    report = prepare("folder", root, tmp_path / "out", opts)
    assert report["files_found"] == 13 and report["clips"]["train"] == 13
    assert report["label_names"] == ["alice", "bob", "carol"]
    labels = [row["label"] for row in manifests(tmp_path / "out")["train"]]
    assert sorted(labels) == [0] * 5 + [1] * 4 + [2] * 4
    refused = {r["path"]: r["reason"] for r in report["refused_links"]}
    assert set(refused) == {"alice/up", "dave"}
    assert refused["alice/up"].startswith("link loop") and "broken link" in refused["dave"]
    summary = format_summary(report)
    assert "13 files found" in summary and "2 links not followed" in summary
    assert "link not followed: alice/up: link loop" in summary


def test_identical_clips_never_straddle_splits(tmp_path):
    """Issue 11 kind 6: a copied file under another name, with a seed under which the ranked
    hash put the pair in two splits: both land in one split (the first member's) and the group is
    listed. GTZAN's numbered split is overridden the same way. Header mode says it did not check."""
    root = tmp_path / "audio"
    for i in range(5):
        clip(root, f"c{i}.wav", seed=i)
    (root / "z_copy.wav").write_bytes((root / "c2.wav").read_bytes())
    keys = [f"c{i}.wav" for i in range(5)] + ["z_copy.wav"]
    seed = next(s for s in range(100) if len(set(map(ranked_split(keys, 0.2, 0.2, s).get,
                                                     ("c2.wav", "z_copy.wav")))) == 2)  # fmt: skip
    opts = prepare_options(val_fraction=0.2, test_fraction=0.2, seed=seed)
    report = prepare("folder", root, tmp_path / "out", opts)
    split = {
        Path(r["path"]).name: r["split"] for r in sum(manifests(tmp_path / "out").values(), [])
    }
    assert len(split) == 6 and split["c2.wav"] == split["z_copy.wav"]
    assert report["duplicates"] == [
        {"split": split["c2.wav"], "paths": ["c2.wav", "z_copy.wav"], "moved": []}
    ]
    assert "1 groups of identical clips (2 files), each kept in one split" in format_summary(report)

    header = prepare("folder", root, tmp_path / "hdr", prepare_options(check_audio="header"))
    assert header["duplicates"] is None
    assert any("duplicates not checked" in n for n in header["notes"])

    gtzan = tmp_path / "gtzan" / "genres_original" / "pop"
    clip(gtzan, "pop.00003.wav")
    clip(gtzan, "pop.00040.wav")
    # The same track again, numbered into test (as GTZAN's known duplicates), in an .au file:
    # the decoded audio is compared, not the bytes.
    data, rate = sf.read(gtzan / "pop.00003.wav", dtype="int16")
    sf.write(gtzan / "pop.00093.au", data, rate, subtype="PCM_16")
    report = prepare("gtzan", tmp_path / "gtzan", tmp_path / "g")
    assert report["clips"] == {"train": 3, "val": 0, "test": 0}
    assert report["duplicates"] == [
        {
            "split": "train",
            "paths": ["genres_original/pop/pop.00003.wav", "genres_original/pop/pop.00093.au"],
            "moved": ["genres_original/pop/pop.00093.au"],
        }
    ]


def test_klettres_layout_wrong_header_and_held_out_language(tmp_path):
    root = build_klettres(tmp_path / "klettres")
    report = prepare("klettres", root, tmp_path / "out")
    rows = manifests(tmp_path / "out")
    assert {r["speaker"] for r in rows["test"]} == {"cs"}
    named = by_name(rows)
    assert named["A.ogg"]["text"] == "A" and named["A.ogg"]["speaker"] == "en"
    assert named["a.ogg"]["text"] == "Á"
    assert "text" not in named["C.ogg"]
    (bad,) = report["skipped"]["bad_sample_rate"]
    assert bad["path"] == "da/alpha/a-0.wav" and "128000" in bad["reason"]
    assert report["missing_files"] == ["en/alpha/B.ogg", "id/alpha/a.wav"]
    assert report["unlisted_files"] == ["en/alpha/C.ogg"]
    assert report["clips"] == {"train": 3, "val": 1, "test": 1}  # en: 1 of 3 to val, da: 1 file


# --------------------------------------------------------------------------------------------------
# Errors, probing, splitting, CLI
# --------------------------------------------------------------------------------------------------


def test_nothing_usable_is_an_error_that_says_why(tmp_path):
    garbage(tmp_path / "d", "a.wav")
    silent(tmp_path / "d", "b.wav")
    with pytest.raises(ValueError, match="none usable: 1 silent, 1 unreadable"):
        prepare("folder", tmp_path / "d", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        prepare("folder", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="metadata.csv"):
        prepare("ljspeech", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown dataset layout 'timit'"):
        prepare("timit", tmp_path / "d", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_rules(tmp_path):
    root = build_folder(tmp_path / "audio")
    with pytest.raises(ValueError, match="inside the dataset folder"):
        prepare("folder", root, root / "manifests")
    prepare("folder", root, tmp_path / "out")
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare("folder", root, tmp_path / "out")
    prepare("folder", root, tmp_path / "out", overwrite=True)
    with pytest.raises(ValueError, match=r"leaves nothing to train"):
        prepare(
            "folder", root, tmp_path / "o2", prepare_options(val_fraction=0.6, test_fraction=0.4)
        )


def test_probe_audio_kinds(tmp_path):
    path = tmp_path / "nan.wav"
    x = chirp_plus_noise(16000, 0.2)
    x[100] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")
    assert probe_audio(path, 0.1, 1e-4)["skip"][0] == "non_finite"
    quiet = silent(tmp_path, "quiet.wav")
    assert probe_audio(quiet, 0.1, 1e-4)["skip"][0] == "silent"
    assert "skip" not in probe_audio(quiet, 0.1, 1e-4, full=False)  # header mode: no decoding
    ok = probe_audio(clip(tmp_path, "ok.flac", 24000, channels=2), 0.1, 1e-4)
    content = ok.pop("content")  # sha1 of the decoded samples: duplicates are found by it
    assert ok == {"sample_rate": 24000, "channels": 2, "n_frames": round(24000 * CLIP_S)}
    same = tmp_path / "same.flac"
    same.write_bytes((tmp_path / "ok.flac").read_bytes())
    assert probe_audio(same, 0.1, 1e-4)["content"] == content and len(content) == 40
    assert "content" not in probe_audio(same, 0.1, 1e-4, full=False)


def test_ranked_split_exact_counts_deterministic_and_never_empties_train():
    keys = [f"clip{i:03d}.wav" for i in range(200)]
    split = ranked_split(keys, 0.1, 0.05, seed=0)
    assert sorted(split.values()).count("val") == 20 and list(split.values()).count("test") == 10
    assert split == ranked_split(list(reversed(keys)), 0.1, 0.05, seed=0)  # order-independent
    assert split != ranked_split(keys, 0.1, 0.05, seed=1)
    assert ranked_split(["only.wav"], 0.5, 0.4, seed=0) == {"only.wav": "train"}
    small = list(ranked_split(["a", "b", "c"], 0.01, 0.01, seed=0).values())
    assert sorted(small) == ["test", "train", "val"]  # a positive fraction gets at least one
    assert list(ranked_split(["a", "b", "c"], 0.0, 0.0, seed=0).values()) == ["train"] * 3
    assert list(ranked_split(["a", "b"], 0.5, 0.5, seed=0).values()).count("train") == 1


def test_cli_prepare(tmp_path):
    root = build_sc09(tmp_path / "sc")
    runner = CliRunner()
    result = runner.invoke(main, ["prepare", "sc09", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (
        "train      19 clips" in result.output and "1 metadata rows without a file" in result.output
    )
    assert (tmp_path / "out" / "prepare_report.json").is_file()
    again = runner.invoke(main, ["prepare", "sc09", str(root), "--out", str(tmp_path / "out")])
    assert (
        again.exit_code == 2
        and "audiodiff: error:" in again.output
        and "--overwrite" in again.output
    )
    folder = build_folder(tmp_path / "f")
    labelled = runner.invoke(main, ["prepare", "folder", str(folder), "--out", str(tmp_path / "o"),
                                    "--label-from-folder", "--val-fraction", "0.4"])  # fmt: skip
    assert labelled.exit_code == 0, labelled.output
    report = json.loads((tmp_path / "o" / "prepare_report.json").read_text())
    assert report["label_names"] == ["deep", "music", "speech"]
    assert report["options"]["val_fraction"] == 0.4


def test_prepare_without_out_writes_where_the_recipes_read(tmp_path, monkeypatch):
    """--out has one sensible default: data/LAYOUT, the folder every recipe reads its manifests
    from (it was a required option)."""
    from audiodiff.config_io import load_config

    monkeypatch.chdir(tmp_path)
    build_folder(tmp_path / "my-audio")
    result = CliRunner().invoke(main, ["prepare", "folder", "my-audio"])
    assert result.exit_code == 0, result.output
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "folder" / "vocoder.yaml"
    cfg = load_config(recipe)
    assert Path(cfg.data.train_manifest).is_file() and Path(cfg.data.val_manifest).is_file()
    assert "to data/folder" in result.output
