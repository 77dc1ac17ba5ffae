"""Readers of published dataset layouts -> deterministic train/val/test manifests (DESIGN.md §8).

``prepare(name, data_dir, out_dir)`` reads a dataset folder the user downloaded, never writes into
it, opens every clip once (soundfile, block by block, so a 20-minute MAESTRO file costs no more
memory than a short one), and writes ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` and
``prepare_report.json`` into ``out_dir``. Manifest rows: ``path`` (absolute), ``duration_s``,
``sample_rate`` and ``channels`` as found (resampling and down-mixing happen on load), ``split``,
and where the layout has them ``speaker``, ``label`` (int; its name in ``label_name`` and the
report) and ``text``.

Split rules (deterministic; the same folder always gives the same manifests):

- official splits where the dataset has them: LibriTTS subsets, Speech Commands lists, MAESTRO's
  ``split`` column; GTZAN has none, so per genre tracks ``00080``-``00089`` are val and
  ``00090``-``00099`` test (80/10/10, stratified by genre).
- held-out voices: VCTK test = :data:`VCTK_TEST_SPEAKERS` (unseen voices), klettres test =
  :data:`KLETTRES_TEST_LANGUAGES` (unseen languages and voices); ``holdout`` overrides either.
- otherwise a ranked hash: within each speaker/label group, clips are sorted by
  ``blake2b(f"{seed}/{relative path}")``; the first ``round(n * val_fraction)`` go to val, the
  next ``round(n * test_fraction)`` to test (at least one each when the fraction is positive),
  and at least one stays in train. Exact counts, independent of file-system order.

Files are skipped, with the reason in the report, when unreadable, empty, at a sample rate no audio
format uses (klettres ships Danish files whose header says 128 kHz), non-finite, shorter than
``min_duration_s`` or silent (peak below ``silence_threshold``). Audio files that no metadata row
names are kept (a vocoder needs no text) and listed in the report, except for MAESTRO and GTZAN,
where such a file has no split or no label.

The code is a package of two modules: ``layouts`` (one reader per layout; opens no audio) and
``prepare`` (probing, splitting, writing).
"""

from audiodiff.datasets.layouts import (
    FRACTIONS,
    GTZAN_GENRES,
    KLETTRES_TEST_LANGUAGES,
    LIBRITTS_SUBSETS,
    READERS,
    SC09_WORDS,
    SPLITS,
    VCTK_TEST_SPEAKERS,
    Clip,
    Layout,
    PrepareOptions,
)
from audiodiff.datasets.prepare import (
    MANIFEST_NAMES,
    format_summary,
    prepare,
    prepare_options,
    probe_audio,
    ranked_split,
)

__all__ = [
    "FRACTIONS",
    "GTZAN_GENRES",
    "KLETTRES_TEST_LANGUAGES",
    "LIBRITTS_SUBSETS",
    "MANIFEST_NAMES",
    "READERS",
    "SC09_WORDS",
    "SPLITS",
    "VCTK_TEST_SPEAKERS",
    "Clip",
    "Layout",
    "PrepareOptions",
    "format_summary",
    "prepare",
    "prepare_options",
    "probe_audio",
    "ranked_split",
]
