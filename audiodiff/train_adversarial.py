"""The adversarial stage of the one Trainer: the discriminator, its optimiser, and its step.

The generator side is a term of the auxiliary losses (:mod:`audiodiff.train_losses`): the
audio decoded from the network's clean estimate is judged by the discriminator
(:mod:`audiodiff.discriminator`), whose parameters are not trained by that term (it runs the
unwrapped module with gradients only towards the generator). Each such call also queues the
(real, generated) pair, detached; after the generator's optimiser step the trainer calls
:meth:`AdversarialStage.step`, which trains the discriminator on the queued pairs (one AdamW step
per optimiser step, gradient accumulation included, clipped like the generator's). Under DDP the
discriminator is wrapped too, so its gradients are averaged like the generator's; bf16 autocast
covers it as it covers the generator.

Its weights and optimiser state are in every checkpoint (``discriminator``,
``discriminator_optimizer``), so stop + resume stays exact; it holds no random state of its own
(no dropout; its initial weights come from a generator seeded by the run's seed). A checkpoint
without them (a run that had no adversarial stage yet) starts a fresh discriminator: that is how
a trained model is fine-tuned adversarially. Exports never carry it (they hold the generator's
EMA weights only).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from audiodiff import dist
from audiodiff.config import TrainConfig
from audiodiff.discriminator import (
    MultiResolutionDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from audiodiff.seeds import derived_seed

# AdamW's betas for the discriminator: HiFi-GAN's (0.8, 0.99).
DISCRIMINATOR_BETAS = (0.8, 0.99)


class AdversarialStage:
    """Discriminator, optimiser and the queue of pairs it is trained on (module docstring).

    Args:
        tr: the run's train config (weights, start step, batch, lr, width, seed, grad_clip).
        ctx: the distributed context.
        autocast: ``(device_type, dtype or None)`` of the generator's autocast.
    """

    def __init__(
        self, tr: TrainConfig, ctx: dist.DistContext, autocast: tuple[str, Any] = ("cpu", None)
    ) -> None:
        self.tr = tr
        self.ctx = ctx
        self.autocast = autocast
        gen = torch.Generator().manual_seed(derived_seed("discriminator", tr.seed))
        self.model = MultiResolutionDiscriminator(
            channels=tr.discriminator_channels, generator=gen
        ).to(ctx.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=tr.discriminator_lr, betas=DISCRIMINATOR_BETAS
        )
        self.net: torch.nn.Module = self.model
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.pending: list[tuple[Tensor, Tensor]] = []

    def active(self, step: int) -> bool:
        """Whether optimiser step ``step`` (0-based) has the adversarial terms."""
        return step >= self.tr.adversarial_start_step

    def generator_terms(self, ref: Tensor, gen: Tensor) -> Tensor:
        """``adversarial * hinge + feature_matching * L_FM`` of generated audio ``gen`` against
        the real ``ref`` (both ``[B, T]``), ``[B]`` (zero past ``adversarial_batch``); queues the
        detached pair for :meth:`step`."""
        n = gen.shape[0] if self.tr.adversarial_batch == 0 else self.tr.adversarial_batch
        ref_part, gen_part = ref[:n], gen[:n]
        self.pending.append((ref_part.detach(), gen_part.detach()))
        # The unwrapped module with frozen parameters: these gradients are the generator's only,
        # and under DDP the discriminator's reducer never sees this pass.
        self.model.requires_grad_(False)
        try:
            fake_logits, fake_features = self.model(gen_part)
            with torch.no_grad():
                _, real_features = self.model(ref_part)
        finally:
            self.model.requires_grad_(True)
        terms = self.tr.adversarial * generator_loss(fake_logits)
        if self.tr.feature_matching:
            terms = terms + self.tr.feature_matching * feature_matching_loss(
                real_features, fake_features
            )
        full = torch.zeros(gen.shape[0], device=gen.device, dtype=terms.dtype)
        full[:n] = terms
        return full

    def step(self) -> tuple[Tensor | None, bool]:
        """Train the discriminator on the queued pairs (one optimiser step), empty the queue.

        Returns:
            ``(mean discriminator loss, a device scalar read only when logged; stepped)``, or
            ``(None, False)`` with nothing queued; a non-finite loss or gradient skips the step
            on every rank alike.
        """
        pairs, self.pending = self.pending, []
        if not pairs:
            return None, False
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.ctx.device)
        for i, (ref, gen) in enumerate(pairs):
            last = i == len(pairs) - 1
            sync = nullcontext() if last or not self.ctx.distributed else self.net.no_sync()
            with sync:
                with torch.autocast(
                    self.autocast[0], self.autocast[1], enabled=self.autocast[1] is not None
                ):
                    real_logits, _ = self.net(ref)
                    fake_logits, _ = self.net(gen)
                    loss = discriminator_loss(real_logits, fake_logits).mean()
                (loss / len(pairs)).backward()
            total += loss.detach().float()
        max_norm = self.tr.grad_clip if self.tr.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        mean = total / len(pairs)
        bad = (~torch.isfinite(mean)) | (~torch.isfinite(grad_norm))
        ok = dist.all_reduce_sum(self.ctx, bad.float()).item() == 0
        if ok:
            self.optimizer.step()
        return mean, ok

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``discriminator`` and ``discriminator_optimizer`` entries."""
        return {
            "discriminator": self.model.state_dict(),
            "discriminator_optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore from a checkpoint; False (and nothing changed) when it has no discriminator."""
        if "discriminator" not in state:
            return False
        self.model.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["discriminator_optimizer"])
        return True
