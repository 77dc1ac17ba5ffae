"""What was done to a run's audio inputs on the way to the model, said once per run.

An 8 kHz file is resampled to the model's rate and a stereo file is mixed down without a word,
and the mel of the 8 kHz one is empty above 4 kHz: the model is handed less than the profile
promises. :class:`InputNotes` counts these per run (a command's inputs, a manifest's usable clips)
and :meth:`InputNotes.note` says it in one line:

    note: of 3 inputs, 2 resampled to 22050 Hz (from 8000 Hz: 1, from 48000 Hz: 1), 1 mixed down
    to mono (from 2 channels: 1), 1 band-limited below the model's f_max 8000 Hz (a file at 8000
    Hz holds nothing above 4000 Hz, so the mel is empty there)

Band-limited here means what the file's rate proves: its Nyquist frequency (half its rate) is
below the model's ``f_max`` (``sample_rate / 2`` when null). Content band-limited inside a
full-rate file (an upsampled telephone recording) is not guessed at: speech itself has little
energy up there, and a threshold that flagged it would cry wolf.
"""

from __future__ import annotations

from collections import Counter


class InputNotes:
    """Counts resampled, mixed-down and band-limited inputs of one run.

    Args:
        sample_rate: the model's rate in Hz (what inputs are resampled to).
        f_max: the model's mel ``f_max`` in Hz; None means ``sample_rate / 2``.
    """

    def __init__(self, sample_rate: int, f_max: float | None) -> None:
        self.sample_rate = int(sample_rate)
        self.f_max = sample_rate / 2 if f_max is None else float(f_max)
        self.total = 0
        self.rates: Counter[int] = Counter()  # file rate -> inputs, every input
        self.channels: Counter[int] = Counter()  # channel count -> inputs, every input

    def add(self, file_rate: int, channels: int, count: int = 1) -> None:
        """Record ``count`` inputs read at ``file_rate`` Hz with ``channels`` channels."""
        self.total += count
        self.rates[int(file_rate)] += count
        self.channels[int(channels)] += count

    def add_counts(self, rates: dict[str, int], channels: dict[str, int]) -> None:
        """Record inputs counted apart by rate and by channels (a data report's ``sample_rates``
        and ``channels``: ``{"8000": 2, "22050": 3}``, ``{"1": 4, "2": 1}``)."""
        self.total += sum(rates.values())
        self.rates.update({int(r): n for r, n in rates.items()})
        self.channels.update({int(c): n for c, n in channels.items()})

    def note(self) -> str | None:
        """One line with the counts, or None when every input was at the model's rate, mono."""
        resampled = {r: n for r, n in sorted(self.rates.items()) if r != self.sample_rate}
        mixed = {c: n for c, n in sorted(self.channels.items()) if c > 1}
        limited = {r: n for r, n in resampled.items() if r / 2 < self.f_max}
        if not (resampled or mixed):
            return None
        parts = []
        if resampled:
            froms = ", ".join(f"from {r} Hz: {n}" for r, n in resampled.items())
            parts.append(f"{sum(resampled.values())} resampled to {self.sample_rate} Hz ({froms})")
        if mixed:
            froms = ", ".join(f"from {c} channels: {n}" for c, n in mixed.items())
            parts.append(f"{sum(mixed.values())} mixed down to mono ({froms})")
        if limited:
            low = min(limited)
            parts.append(
                f"{sum(limited.values())} band-limited below the model's f_max {self.f_max:g} Hz "
                f"(a file at {low} Hz holds nothing above {low / 2:g} Hz, so the mel is empty "
                "there)"
            )
        noun = "input" if self.total == 1 else "inputs"
        return f"note: of {self.total} {noun}, " + ", ".join(parts)
