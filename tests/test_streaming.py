"""Vocoder.stream: mel pieces of any size in, audio out as soon as it is final, equal to offline
synthesis with the same seed and key; the lookahead it waits for; bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiodiff.config_io import apply_overrides
from audiodiff.config_rules import validate
from audiodiff.streaming import MelBuffer, stream_spans
from audiodiff.vocoder import Vocoder
from tests.conftest import STFT_TINY, chirp_plus_noise, random_export


def pieces_of(mel: torch.Tensor, size: int, squeeze: bool = False):
    for i in range(0, mel.shape[-1], size):
        piece = mel[..., i : i + size]
        yield piece[0] if squeeze else piece


def streamed(voc: Vocoder, mel: torch.Tensor, size: int, **kw) -> tuple[torch.Tensor, int]:
    pieces = list(voc.stream(pieces_of(mel, size, squeeze=size % 2 == 1), **kw))
    return torch.cat(pieces, dim=-1), len(pieces)


@pytest.fixture
def stft_vocoder(tiny_config, tmp_path):
    cfg = validate(apply_overrides(tiny_config, STFT_TINY))
    return Vocoder.from_pretrained(random_export(cfg, tmp_path / "s.safetensors", output_std=0.05))


@pytest.mark.parametrize("size", [1, 7, 64])
def test_refined_stft_stream_equals_offline(stft_vocoder, size):
    voc = stft_vocoder
    audio = np.concatenate([chirp_plus_noise(22050, 0.5, seed=s) for s in range(3)])
    mel = voc.mel(audio, 22050)
    kw = {"sampler": "ddim", "steps": 2, "mel_match_iters": 2, "griffin_lim_iters": 3}
    offline = voc(mel, seed=11, keys=[5], **kw)
    out, n = streamed(voc, mel, size, seed=11, key=5, chunk_frames=16, **kw)
    assert out.shape == offline.shape
    assert n >= 3  # really cut into chunks, not one pass at the end
    assert float((out - offline).abs().max()) <= 1e-5


@pytest.mark.parametrize("size", [1, 7, 64])
def test_waveform_stream_equals_offline(tiny_config, tmp_path, size):
    voc = Vocoder.from_pretrained(random_export(tiny_config, tmp_path / "w.safetensors"))
    mel = voc.mel(chirp_plus_noise(voc.sample_rate, 1.2, 1), voc.sample_rate)
    assert voc.lookahead_frames < mel.shape[-1] // 3
    offline = voc(mel, seed=2, keys=[0], steps=2, sampler="ddim")
    out, n = streamed(voc, mel, size, seed=2, steps=2, sampler="ddim", chunk_frames=4)
    assert out.shape == offline.shape and n >= 3
    assert float((out - offline).abs().max()) <= 1e-5


def test_first_audio_comes_before_the_mel_ends_and_memory_is_bounded():
    buffer = MelBuffer(2)
    fed = []

    def pieces():
        for i in range(100):
            fed.append(i)
            yield torch.full((1, 2, 1), float(i))

    spans = stream_spans(pieces(), buffer, hop=1, halo=5, lookahead=6, chunk_frames=4,
                         max_frames=8)  # fmt: skip
    first = next(spans)
    assert first == (0, 9, 0, 4) and len(fed) == 10  # 4 frames final once 4 + 6 arrived
    rest = list(spans)
    assert rest[-1][3] == 100 and buffer.end == 100
    assert all(s1 - s0 <= 8 for _, _, s0, s1 in rest)
    assert buffer.data.shape[-1] <= 8 + 6 + 6 + 1  # a chunk, its lookahead and its halo
    centres = [first[2:]] + [r[2:] for r in rest]
    assert [c[0] for c in centres[1:]] == [c[1] for c in centres[:-1]]  # contiguous


def test_stream_refuses_a_batch_and_bad_settings_at_once(stft_vocoder):
    voc = stft_vocoder
    with pytest.raises(ValueError, match="unknown sampler"):
        voc.stream([], sampler="nope")  # before any piece is read
    mel = voc.mel(chirp_plus_noise(22050, 0.3, 0), 22050)
    with pytest.raises(ValueError, match="one utterance"):
        list(voc.stream([torch.cat([mel, mel])], seed=0))
    assert voc.lookahead_ms == pytest.approx(voc.lookahead_frames * 256 / 22.05)


def test_shipped_model_streams_exactly():
    voc = Vocoder.from_pretrained("small-speech")
    assert voc.lookahead_frames > 0
    audio = np.concatenate([chirp_plus_noise(22050, 0.9, seed=s) for s in range(3)])
    mel = voc.mel(0.5 * audio, 22050)
    offline = voc(mel, seed=1, keys=[0])
    out, n = streamed(voc, mel, 7, seed=1, chunk_frames=48)
    assert n >= 2 and float((out - offline).abs().max()) <= 1e-5
