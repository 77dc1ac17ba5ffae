"""Layout readers: a downloaded dataset folder -> the clips it names, before any audio is opened.

One reader per published layout (DESIGN.md §8). A reader parses the dataset's own metadata and
lists files; it reports metadata rows whose file is absent (``missing``) and audio files no row
names (``unlisted``), and it never writes into the folder. Layouts as published:

- ``ljspeech`` (LJSpeech-1.1): ``wavs/LJ001-0001.wav`` + ``metadata.csv`` (``id|text|normalised``).
- ``vctk`` (VCTK-Corpus-0.92): ``wav48_silence_trimmed/pNNN/pNNN_NNN_mic{1,2}.flac``,
  ``txt/pNNN/pNNN_NNN.txt``, ``speaker-info.txt`` (p315 has no text, p280 no mic2).
- ``libritts``: ``SUBSET/SPEAKER/CHAPTER/SPK_CHAP_UTT_SEG.wav`` with ``.normalized.txt`` and the
  chapter's ``SPK_CHAP.trans.tsv`` (``id<TAB>original<TAB>normalised``); also ``LibriTTS/`` or
  ``LibriTTS_R/`` above the subsets.
- ``sc09``: Speech Commands v0.02 ``zero/`` ... ``nine/`` (``SPEAKERHASH_nohash_N.wav``) with
  ``validation_list.txt`` / ``testing_list.txt`` (``word/file.wav`` per line).
- ``maestro`` (v3.0.0): ``maestro-v3.0.0.csv`` (columns include ``split`` = train | validation |
  test and ``audio_filename`` = ``YEAR/NAME.wav``).
- ``gtzan``: ``genres_original/GENRE/GENRE.000NN.wav`` (Kaggle) or ``genres/GENRE/GENRE.000NN.au``
  (marsyas tarball); the Kaggle ``jazz.00054.wav`` is corrupt.
- ``folder``: any tree of audio files; optional label from the parent folder name.
- ``klettres`` (Debian klettres-data, ``/usr/share/klettres``): ``LANG/{alpha,syllab}/*.ogg`` named
  by ``LANG/sounds.xml`` (``<sound name="A" file="en/alpha/A.ogg"/>``; the name is the text).
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from audiodiff.encoding import path_from_text
from audiodiff.files import walk_files

SPLITS = ("train", "val", "test")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".au", ".aif", ".aiff")
# Rates real audio formats use; anything else means a broken header, not exotic audio.
STANDARD_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000,
                         88200, 96000, 176400, 192000)  # fmt: skip
SC09_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop",
                "reggae", "rock")  # fmt: skip
GTZAN_KNOWN_BAD = MappingProxyType(
    {"jazz/jazz.00054.wav": "known corrupt file of the Kaggle GTZAN release"}
)
# Four female (p225, p228, p234, p248) and four male (p226, p227, p232, p237) VCTK voices.
VCTK_TEST_SPEAKERS = ("p225", "p226", "p227", "p228", "p232", "p234", "p237", "p248")
# Two mono 44.1 kHz languages, about 5% of klettres' files: a vocoder is tested on unseen voices.
KLETTRES_TEST_LANGUAGES = ("cs", "nl")
LIBRITTS_SUBSETS = MappingProxyType({
    "train-clean-100": "train", "train-clean-360": "train", "train-other-500": "train",
    "dev-clean": "val", "dev-other": "val", "test-clean": "test", "test-other": "test",
})  # fmt: skip
# (val_fraction, test_fraction) defaults of the layouts that split by ranked hash; None means the
# layout decides that split itself, and giving the fraction is an error.
FRACTIONS = MappingProxyType({
    "ljspeech": (0.01, 0.03), "folder": (0.05, 0.05), "vctk": (0.02, None),
    "klettres": (0.05, None), "libritts": (None, None), "sc09": (None, None),
    "maestro": (None, None), "gtzan": (None, None),
})  # fmt: skip


@dataclass(frozen=True)
class Clip:
    """One audio file named by a layout; ``split`` None means "decided by the ranked hash"."""

    path: Path
    split: str | None = None
    speaker: str | None = None
    label: int | None = None
    text: str | None = None


@dataclass
class Layout:
    """What a reader found before any audio was opened (paths in lists are relative)."""

    clips: list[Clip]
    split_rule: str
    missing: list[str] = field(default_factory=list)  # metadata rows whose file is absent
    unlisted: list[str] = field(default_factory=list)  # files that no metadata row names
    label_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    known_bad: dict[str, str] = field(default_factory=dict)
    # links (and folders) the walk did not follow: {"path", "reason"} (a loop, a broken link)
    refused_links: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class PrepareOptions:
    """Knobs of :func:`prepare`.

    Attributes:
        val_fraction, test_fraction: ranked-hash shares; None takes the layout's default
            (:data:`FRACTIONS`), and giving one to a layout with an official split is an error.
        seed: seed of the ranked hash.
        mic: VCTK microphone.
        holdout: test speakers (VCTK) or languages (klettres) replacing the defaults.
        label_from_folder: ``folder`` layout: label = parent folder name.
        min_duration_s, silence_threshold: shorter files, or files whose peak stays below the
            threshold, are skipped (defaults as ``DataConfig``).
        check_audio: ``"full"`` decodes every file; ``"header"`` trusts headers (no silence check).
        workers: decoding processes; 0 or 1 decodes inline.
    """

    val_fraction: float | None = None
    test_fraction: float | None = None
    seed: int = 0
    mic: Literal["mic1", "mic2"] = "mic1"
    holdout: tuple[str, ...] | None = None
    label_from_folder: bool = False
    min_duration_s: float = 0.1
    silence_threshold: float = 1e-4
    check_audio: Literal["full", "header"] = "full"
    workers: int = 0


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _audio_files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(
        p for p in folder.glob(pattern) if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
    )


def _require(path: Path, what: str, layout: str) -> Path:
    if not path.exists():
        raise ValueError(f"{layout}: {path} not found; {what}")
    return path


# --------------------------------------------------------------------------------------------------
# Layout readers: folder -> Layout. They parse metadata and list files; they open no audio.
# --------------------------------------------------------------------------------------------------


def _read_ljspeech(root: Path, opts: PrepareOptions) -> Layout:
    meta = _require(root / "metadata.csv", "DATA_DIR must be the LJSpeech-1.1 folder", "ljspeech")
    texts: dict[str, str | None] = {}
    for line in meta.read_text(encoding="utf-8").splitlines():
        # id|text|normalised text; not csv-quoted (texts contain quote marks), so split on "|".
        fields = line.split("|")
        if fields[0].strip():
            normalised = fields[2].strip() if len(fields) > 2 else ""
            texts[fields[0].strip()] = normalised or (
                fields[1].strip() if len(fields) > 1 else None
            )
    files = {p.stem: p for p in _audio_files(root / "wavs", "*.wav")}
    clips = [Clip(p, text=texts.get(k)) for k, p in files.items()]
    return Layout(
        clips,
        "ranked hash of the clip path, seed-dependent (default val 1%, test 3%)",
        missing=[f"metadata.csv: {k}" for k in texts if k not in files],
        unlisted=[_rel(p, root) for k, p in files.items() if k not in texts],
    )


def _read_vctk(root: Path, opts: PrepareOptions) -> Layout:
    if opts.mic not in ("mic1", "mic2"):
        raise ValueError(f"vctk: mic must be mic1 or mic2, got {opts.mic!r}")
    wav_dir = _require(root / "wav48_silence_trimmed", "DATA_DIR must be VCTK-Corpus-0.92", "vctk")
    known: set[str] = set()
    info = root / "speaker-info.txt"
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
            if line.split():
                sid = line.split()[0]
                known.add(sid if sid.startswith(("p", "s")) else f"p{sid}")
    texts = {
        p.stem: p.read_text(encoding="utf-8", errors="replace").strip()
        for p in sorted((root / "txt").glob("*/*.txt"))
    }
    suffix = f"_{opts.mic}"
    files = {p.stem[: -len(suffix)]: p for p in _audio_files(wav_dir, f"*/*{suffix}.flac")}
    holdout = set(opts.holdout if opts.holdout is not None else VCTK_TEST_SPEAKERS)
    clips = [
        Clip(p, "test" if p.parent.name in holdout else None, p.parent.name, text=texts.get(k))
        for k, p in files.items()
    ]
    notes = []
    speakers = {c.speaker for c in clips}
    if not info.is_file():
        notes.append("speaker-info.txt not found")
    elif speakers - known:
        notes.append(f"speakers missing from speaker-info.txt: {sorted(speakers - known)}")
    if not holdout & speakers:
        notes.append(f"none of the held-out speakers {sorted(holdout)} is present: test is empty")
    return Layout(
        clips,
        f"test = held-out speakers {sorted(holdout)}; val = ranked hash of the other speakers' "
        "clips (default 2% per speaker)",
        missing=[f"txt/{k.split('_')[0]}/{k}.txt" for k in texts if k not in files],
        unlisted=[_rel(p, root) for k, p in files.items() if k not in texts],
        notes=notes,
    )


def _read_libritts(root: Path, opts: PrepareOptions) -> Layout:
    for base in (root, root / "LibriTTS", root / "LibriTTS_R"):
        subsets = [s for s in LIBRITTS_SUBSETS if (base / s).is_dir()]
        if subsets:
            break
    else:
        raise ValueError(f"libritts: no subset folder ({', '.join(LIBRITTS_SUBSETS)}) in {root}")
    clips, missing, unlisted = [], [], []
    for subset in subsets:
        texts: dict[str, str] = {}
        for tsv in sorted((base / subset).glob("*/*/*.trans.tsv")):
            for row in tsv.read_text(encoding="utf-8").splitlines():
                cols = row.split("\t")  # utterance id, original text, normalised text
                if len(cols) >= 3:
                    texts[cols[0]] = cols[2].strip()
        for txt in sorted((base / subset).glob("*/*/*.normalized.txt")):
            texts[txt.name[: -len(".normalized.txt")]] = txt.read_text(encoding="utf-8").strip()
        files = {p.stem: p for p in _audio_files(base / subset, "*/*/*.wav")}
        clips += [
            Clip(p, LIBRITTS_SUBSETS[subset], k.split("_")[0], text=texts.get(k))
            for k, p in files.items()
        ]
        missing += [f"{subset}: {k}" for k in texts if k not in files]
        unlisted += [_rel(p, root) for k, p in files.items() if k not in texts]
    return Layout(
        clips, f"official subsets: {dict(LIBRITTS_SUBSETS)}", missing=missing, unlisted=unlisted
    )


def _read_sc09(root: Path, opts: PrepareOptions) -> Layout:
    lists = {}
    for split, name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        path = _require(root / name, "it ships in speech_commands_v0.02.tar.gz", "sc09")
        lines = path.read_text(encoding="utf-8").splitlines()
        lists[split] = {path_from_text(ln.strip()) for ln in lines if ln.strip()}
    clips = []
    for label, word in enumerate(SC09_WORDS):
        for p in _audio_files(root / word, "*.wav"):
            rel = _rel(p, root)
            split = "val" if rel in lists["val"] else "test" if rel in lists["test"] else "train"
            clips.append(Clip(p, split, p.name.split("_nohash_")[0], label, word))
    digits = {f"{w}/" for w in SC09_WORDS}
    listed = {r for s in lists.values() for r in s if r[: r.find("/") + 1] in digits}
    return Layout(
        clips,
        "official validation_list.txt / testing_list.txt; every other digit clip is train",
        missing=sorted(f"list: {r}" for r in listed if not (root / r).is_file()),
        label_names=list(SC09_WORDS),
    )


def _read_maestro(root: Path, opts: PrepareOptions) -> Layout:
    found = sorted(root.glob("maestro-v*.csv"), reverse=True)  # newest version first
    meta = found[0] if found else root / "maestro-v3.0.0.csv"
    _require(meta, "DATA_DIR must be the maestro-v3.0.0 folder", "maestro")
    with meta.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    absent = {"split", "audio_filename"} - set(rows[0] if rows else {})
    if absent:
        raise ValueError(f"maestro: {meta.name} lacks the column(s) {sorted(absent)}")
    to_split = {"train": "train", "validation": "val", "test": "test"}
    clips, missing = [], []
    for row in rows:
        if row["split"] not in to_split:
            raise ValueError(f"maestro: split {row['split']!r} is not one of {list(to_split)}")
        path = root / path_from_text(row["audio_filename"])
        if path.is_file():
            clips.append(Clip(path, to_split[row["split"]]))
        else:
            missing.append(f"{meta.name}: {row['audio_filename']}")
    named = {c.path for c in clips}
    on_disk = [p for d in sorted(root.iterdir()) if d.is_dir() for p in _audio_files(d)]
    return Layout(
        clips,
        f"official split column of {meta.name} (validation -> val)",
        missing=missing,
        unlisted=[_rel(p, root) for p in on_disk if p not in named],
    )


def _read_gtzan(root: Path, opts: PrepareOptions) -> Layout:
    bases = (root / "genres_original", root / "genres", root / "Data" / "genres_original", root)
    base = next((b for b in bases if any((b / g).is_dir() for g in GTZAN_GENRES)), None)
    if base is None:
        raise ValueError(f"gtzan: no genre folders ({', '.join(GTZAN_GENRES)}) in {root}")
    clips, missing, unlisted = [], [], []
    for label, genre in enumerate(GTZAN_GENRES):
        numbers = set()
        for p in _audio_files(base / genre):
            match = re.fullmatch(rf"{genre}\.(\d{{5}})\.(wav|au)", p.name)
            if not match:
                unlisted.append(_rel(p, root))
                continue
            number = int(match.group(1))
            numbers.add(number)
            split = "train" if number % 100 < 80 else "val" if number % 100 < 90 else "test"
            clips.append(Clip(p, split, label=label))
        if (base / genre).is_dir():
            missing += [f"{genre}/{genre}.{n:05d}" for n in range(100) if n not in numbers]
        else:
            missing.append(f"{genre}/ (whole genre folder)")
    known_bad = {_rel(base / k, root): v for k, v in GTZAN_KNOWN_BAD.items()}
    return Layout(
        clips,
        "per genre: tracks 00000-00079 train, 00080-00089 val, 00090-00099 test",
        missing=missing,
        unlisted=unlisted,
        label_names=list(GTZAN_GENRES),
        known_bad=known_bad,
    )


def _read_folder(root: Path, opts: PrepareOptions) -> Layout:
    # Symlinked folders are followed (loop-safe); hidden files include macOS "._x.wav" resource
    # forks, which are not audio.
    walked, refused = walk_files(root, skip_hidden=True)
    files = [p for p in walked if p.suffix.lower() in AUDIO_EXTENSIONS]
    unlisted, names = [], []
    if opts.label_from_folder:
        unlisted = [_rel(p, root) for p in files if p.parent == root]
        files = [p for p in files if p.parent != root]
        names = sorted({p.parent.name for p in files})
    clips = [Clip(p, label=names.index(p.parent.name) if names else None) for p in files]
    return Layout(
        clips,
        "ranked hash of the relative path"
        + (", stratified by label" if names else "")
        + " (default val 5%, test 5%)",
        unlisted=unlisted,
        label_names=names,
        notes=["label = name of the file's parent folder"] if names else [],
        refused_links=refused,
    )


def _read_klettres(root: Path, opts: PrepareOptions) -> Layout:
    langs = sorted(d.name for d in root.iterdir() if (d / "sounds.xml").is_file())
    if not langs:
        raise ValueError(f"klettres: no <lang>/sounds.xml under {root} (/usr/share/klettres)")
    texts: dict[str, str] = {}
    notes = []
    for lang in langs:
        try:
            # Parsed from the file's bytes: the XML declaration names the encoding, not the locale.
            for sound in ET.parse(root / lang / "sounds.xml").iter("sound"):
                if sound.get("file"):
                    texts[path_from_text(sound.get("file", ""))] = sound.get("name", "")
        except ET.ParseError as err:
            notes.append(f"{lang}/sounds.xml is not valid XML: {err}")
    holdout = set(opts.holdout if opts.holdout is not None else KLETTRES_TEST_LANGUAGES)
    files = [p for lang in langs for p in _audio_files(root / lang, "*/*")]
    clips = [
        Clip(
            p,
            "test" if p.parent.parent.name in holdout else None,
            p.parent.parent.name,
            text=texts.get(_rel(p, root)),
        )
        for p in files
    ]
    on_disk = {_rel(p, root) for p in files}
    return Layout(
        clips,
        f"test = held-out languages {sorted(holdout)}; val = ranked hash within each other "
        "language (default 5%); speaker = language code (voices are not labelled)",
        missing=sorted(f for f in texts if f not in on_disk),
        unlisted=sorted(f for f in on_disk if f not in texts),
        notes=notes,
    )


READERS: MappingProxyType[str, Callable[[Path, PrepareOptions], Layout]] = MappingProxyType(
    {
        "ljspeech": _read_ljspeech,
        "vctk": _read_vctk,
        "libritts": _read_libritts,
        "sc09": _read_sc09,
        "maestro": _read_maestro,
        "gtzan": _read_gtzan,
        "folder": _read_folder,
        "klettres": _read_klettres,
    }
)
