"""The stable inference API: ``Vocoder`` (mel -> waveform) over the sampling engine of
:mod:`audiodiff.synthesis` (chunked long-form synthesis with positional noise; see there), whole
or streamed (:mod:`audiodiff.streaming`). The input checks live in :mod:`audiodiff.mel_checks`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from audiodiff.audio import as_audio_batch, check_level, load_model_audio, resample
from audiodiff.config import ExperimentConfig, MelConfig
from audiodiff.diffusion import Denoiser
from audiodiff.dist import resolve_device
from audiodiff.domains import build_domain
from audiodiff.input_notes import InputNotes
from audiodiff.mel import MelSpectrogram
from audiodiff.mel_checks import (  # noqa: F401  (re-exported: the checks' old home)
    MEL_RANGE_TOLERANCE,
    _as_mel_tensor,
    check_mel,
    check_profile,
    describe_convention,
    mel_range_tolerance,
    profile_difference,
)
from audiodiff.model import DiffWave
from audiodiff.pretrained import load_network
from audiodiff.schedule import NoiseSchedule
from audiodiff.seeds import item_key, resolve_seed
from audiodiff.streaming import lookahead_frames, stream_mel
from audiodiff.synthesis import (
    SamplingSpec,
    halo_units,
    make_sampling_spec,
    mel_chunk_count,
    vocode_mel,
)


class Vocoder:
    """Mel spectrogram -> waveform with a trained (or imported) DiffWave model.

    Build it with :meth:`from_pretrained`; the network is rebuilt from the config stored with the
    weights, never from defaults.
    """

    def __init__(self, net: DiffWave, cfg: ExperimentConfig, *, device: Any = None) -> None:
        if cfg.model.domain not in ("waveform", "stft") or cfg.model.conditioning != "mel":
            raise ValueError(
                f"a Vocoder needs a mel-conditioned waveform or stft model, but this one has "
                f"domain={cfg.model.domain!r}, conditioning={cfg.model.conditioning!r}"
            )
        self.device = resolve_device(None if device is None else str(device), option="device")
        self.config = cfg
        self.net = net.to(self.device).eval()
        self.schedule = NoiseSchedule.from_config(cfg.diffusion)
        self._mel = MelSpectrogram(cfg.mel).to(self.device)
        self.domain = build_domain(cfg, self.net)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: Any = None) -> Vocoder:
        """Load a training checkpoint, a run directory, an exported ``.safetensors`` or a name.

        Raises:
            ValueError: a device this machine lacks (checked before loading), unreadable file,
                not an audiodiff model, or not a vocoder.
        """
        device = resolve_device(None if device is None else str(device), option="device")
        net, cfg, _ = load_network(path)
        return cls(net, cfg, device=device)

    @property
    def mel_config(self) -> MelConfig:
        return self.config.mel

    @property
    def sample_rate(self) -> int:
        return self.config.mel.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.mel.hop_length

    @property
    def n_mels(self) -> int:
        return self.config.mel.n_mels

    @torch.inference_mode()
    def mel(self, audio: Any, sample_rate: int, *, check: bool = True) -> torch.Tensor:
        """Mel features of ``audio`` exactly as in training (resampled to the model's rate).

        Args:
            audio: ``[T]``, ``[B, T]`` or ``[B, 1, T]``, NumPy or torch, in [-1, 1]
                (:func:`audiodiff.audio.as_audio_batch`: a stereo array is refused, with how
                to pass it).
            sample_rate: rate of ``audio`` in Hz.
            check: refuse silent, over-range or non-finite audio (:func:`check_level`, on the
                resampled signal the model gets); off for plotting generated audio.

        Returns:
            ``[B, n_mels, frames]`` float32 on CPU.

        Raises:
            ValueError: a layout other than the three above (a stereo array names how to pass
                it), or a level check failed (the message names the peak and the limit).
        """
        x = as_audio_batch(audio)
        stage = ""
        if sample_rate != self.sample_rate:
            x = resample(x, sample_rate, self.sample_rate)
            stage = f"after resampling from {sample_rate} to {self.sample_rate} Hz"
        if check:
            check_level(x, "audio", stage=stage)
        return self._mel(x.to(self.device)).float().cpu()

    def mel_from_file(self, path: str | Path, notes: InputNotes | None = None) -> torch.Tensor:
        """``[1, n_mels, frames]`` mel of an audio file (any rate; resampled), level-checked on
        the mixed-down, resampled signal (:func:`audiodiff.audio.load_model_audio`, which also
        records the conversions in ``notes``)."""
        audio, rate = load_model_audio(path, self.sample_rate, notes)
        try:
            return self.mel(audio, rate, check=False)
        except ValueError as err:  # e.g. shorter than one analysis window: name the file
            raise ValueError(f"{path}: {err}") from None

    def halo_samples(self, steps: int) -> int:
        """Exactness halo of chunked synthesis, in the domain's time steps (samples for waveform
        models, frames for stft ones): ``steps`` network evaluations x the receptive radius,
        plus the reach of the DSP estimate a ``model.start: estimate`` model starts from."""
        return halo_units(self.net, steps) + self.domain.estimate_halo()

    @torch.inference_mode()
    def __call__(
        self,
        mel: Any,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        eta: float | None = None,
        t_mapping: str = "diffwave",
        chunk_seconds: float | Literal["auto"] | None = "auto",
        progress: Callable[[int], None] | None = None,
        keys: Sequence[int] | None = None,
        profile: MelConfig | str | None = None,
        chunk_progress: Callable[[int], None] | None = None,
        mel_match_iters: int | None = None,
        griffin_lim_iters: int | None = None,
        magnitude_blend: float | None = None,
    ) -> torch.Tensor:
        """Synthesize audio from mel spectrograms.

        Args:
            mel: ``[n_mels, frames]`` or ``[B, n_mels, frames]``, NumPy or torch, in this model's
                mel convention (:attr:`mel_config`).
            steps: network evaluations; default the model's ``sample.steps`` (the shipped
                ``small-speech``: 1; ``small-speech-waveform``: 6).
            sampler: ``"diffwave-fast"``, ``"ddpm"``, ``"ddim"`` or ``"dpmpp-2m"``; default the
                model's ``sample.sampler``.
            generator: source of the seed of all noise (a fixed generator reproduces the output).
            seed: alternative to ``generator``.
            eta: DDIM stochasticity (0 = deterministic).
            t_mapping: how a noise level maps to the network's step index: ``"diffwave"``
                (the paper's alignment) or ``"log-sigma"``.
            chunk_seconds: long-form chunk length; ``"auto"`` is the domain's default (6 s for
                waveform models, 30 s for frame-rate ones); ``None`` evaluates the whole
                utterance at once.
            progress: called with 1 after each sampler step of each chunk.
            keys: one noise key per row; default a hash of the row's mel values, so a mel gives
                the same audio for one seed whatever it is batched with and wherever it sits
                (on a CPU bit for bit; a GPU may round batched kernels differently).
            profile: the mel profile the input was computed with (name or
                :class:`~audiodiff.config.MelConfig`), checked against :attr:`mel_config`.
            chunk_progress: called with 1 after each chunk (:meth:`chunk_count` of them).
            mel_match_iters, griffin_lim_iters, magnitude_blend: stft-domain models: refine the
                sampled STFT towards the mel (its magnitude blended with Griffin-Lim's estimate,
                1 = the network's only), then by Griffin-Lim iterations from the network's phase
                (:mod:`audiodiff.consistency`); default the model's ``sample`` settings. All of
                ``0, 0, 1`` give the network's raw output.

        Returns:
            ``[B, 1, frames * hop_length]`` float32 on CPU, in [-1, 1] up to model error.

        Raises:
            ValueError: a mel that does not fit the model (:func:`check_mel`), a ``profile``
                with other parameters, or a bad sampler setting.
        """
        mel = check_mel(mel, self.config.mel, profile)
        if keys is None:
            keys = [item_key(row) for row in mel]
        mel = mel.to(self.device)
        spec, denoiser = self._sampling(
            sampler=sampler, steps=steps, eta=eta, t_mapping=t_mapping,
            mel_match_iters=mel_match_iters, griffin_lim_iters=griffin_lim_iters,
            magnitude_blend=magnitude_blend,
        )  # fmt: skip
        return vocode_mel(
            denoiser,
            spec,
            self.domain,
            mel,
            seed=resolve_seed(generator, seed),
            chunk_samples=self._chunk_samples(chunk_seconds),
            device=self.device,
            keys=keys,
            progress=progress,
            chunk_progress=chunk_progress,
        )

    def _sampling(
        self, t_mapping: str = "diffwave", **settings: Any
    ) -> tuple[SamplingSpec, Denoiser]:
        """The resolved sampling settings (:func:`make_sampling_spec`) and the denoiser for them."""
        spec = make_sampling_spec(self.config, self.schedule, t_mapping=t_mapping, **settings)
        target = self.config.diffusion.target
        return spec, Denoiser(self.net, self.schedule, target=target, t_mapping=spec.t_mapping)

    @property
    def lookahead_frames(self) -> int:
        """Mel frames past a frame that its audio depends on, with the model's own sampling
        settings (:func:`audiodiff.streaming.lookahead_frames`): what :meth:`stream` waits for."""
        spec, denoiser = self._sampling()
        return lookahead_frames(self.net, spec, self.domain)

    @property
    def lookahead_ms(self) -> float:
        """:attr:`lookahead_frames` in milliseconds of audio."""
        return 1000.0 * self.lookahead_frames * self.hop_length / self.sample_rate

    def stream(
        self,
        mel_chunks: Iterable[Any],
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        key: int = 0,
        chunk_frames: int | None = None,
        profile: MelConfig | str | None = None,
        **sampling: Any,
    ) -> Iterator[torch.Tensor]:
        """Synthesize one utterance from mel pieces as they arrive (:mod:`audiodiff.streaming`).

        Args:
            mel_chunks: an iterable of ``[n_mels, frames]`` or ``[1, n_mels, frames]`` pieces of
                any length (NumPy or torch; each checked as :func:`check_mel`).
            seed, generator: as :meth:`__call__`; ``key``: the noise key (:meth:`__call__`'s
                default, a hash of the whole mel, cannot be known before the stream ends), so
                ``torch.cat(list(vocoder.stream(pieces, seed=s, key=k)), -1)`` equals
                ``vocoder(mel, seed=s, keys=[k])`` (within 1e-5).
            chunk_frames: the fewest new frames worth a chunk (default ``max(16,
                lookahead_frames)``): audio comes ``lookahead_frames`` after its mel, in pieces
                of at least this many frames; smaller pieces cost more halo per second.
            profile: as :meth:`__call__`.
            **sampling: ``steps``, ``sampler``, ``eta``, ``t_mapping``, ``mel_match_iters``,
                ``griffin_lim_iters``, ``magnitude_blend``, as :meth:`__call__`.

        Returns:
            an iterator of ``[1, 1, L]`` float32 CPU pieces of audio, in order.

        Raises:
            ValueError: a bad sampler setting or profile (now), or a bad piece (when it is read).
        """
        if profile is not None:
            check_profile(profile, self.config.mel)
        spec, denoiser = self._sampling(**sampling)
        lookahead = lookahead_frames(self.net, spec, self.domain)
        max_frames = int(self.domain.default_chunk_s * self.sample_rate) // self.hop_length
        return stream_mel(
            denoiser, spec, self.domain, self._stream_pieces(mel_chunks),
            seed=resolve_seed(generator, seed), key=int(key), device=self.device,
            chunk_frames=max(16, lookahead) if chunk_frames is None else int(chunk_frames),
            max_frames=max_frames, n_mels=self.n_mels,
        )  # fmt: skip

    def _stream_pieces(self, pieces: Iterable[Any]) -> Iterator[torch.Tensor]:
        for piece in pieces:
            mel = _as_mel_tensor(piece)
            if mel.shape[0] != 1:
                raise ValueError(f"a stream is one utterance: a piece of shape {tuple(mel.shape)}")
            if mel.shape[-1] > 0:
                yield check_mel(mel, self.config.mel).to(self.device)

    def _chunk_samples(self, chunk_seconds: float | Literal["auto"] | None) -> int | None:
        if chunk_seconds == "auto":
            chunk_seconds = self.domain.default_chunk_s
        return None if chunk_seconds is None else int(chunk_seconds * self.sample_rate)

    def chunk_count(
        self, frames: int, chunk_seconds: float | Literal["auto"] | None = "auto"
    ) -> int:
        """How many chunks a call on a mel of ``frames`` frames runs (a progress bar's total)."""
        return mel_chunk_count(self.domain, frames, self._chunk_samples(chunk_seconds))
