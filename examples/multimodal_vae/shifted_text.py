r"""A text likelihood that reads a caption from any start: MoPoE's CelebA captions.

MoPoE's captions (:func:`data.celeba_text.attributes_to_text`) put the text at a random
start after padding characters. A categorical per position must learn the caption once for
every start, and an encoder that forgets the start (a maximum over positions) leaves it no
way to tell which. :class:`ShiftedCategorical` instead makes the start a latent variable
``s``, uniform on ``0..L-1``, and sums it out: the decoder's logits
:math:`\ell \in \mathbb R^{L \times V}` describe the caption read from its first
character, and

.. math::

    p(x \mid z) = \frac1L \sum_{s=0}^{L-1} \mathbb 1[x_i = \text{pad},\ i < s]
    \prod_{j=0}^{L-1-s} \operatorname{softmax}(\ell_j)[x_{s+j}].

The sum costs one ``(L, V) × (V, L)`` product per caption (all ``L`` starts at once).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, constraints


class ShiftedCategorical(Distribution):
    """Characters ``x`` of one-hot shape ``(..., L, V)`` read from a uniform random start.

    Parameters
    ----------
    logits : Tensor
        ``(..., L, V)``: the caption from its first character, one categorical per position.
    pad : int
        Index in the vocabulary of the padding character before the start.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {"logits": constraints.real}

    def __init__(self, logits: Tensor, pad: int) -> None:
        if logits.dim() < 2:
            raise ValueError(f"logits must be (..., L, V), got shape {tuple(logits.shape)}")
        if not 0 <= pad < logits.shape[-1]:
            raise ValueError(f"pad must index the vocabulary of {logits.shape[-1]}, got {pad}")
        self.logits, self.pad = logits, pad
        super().__init__(logits.shape[:-2], logits.shape[-2:], validate_args=False)

    @property
    def mean(self) -> Tensor:
        """The character probabilities of the caption read from start 0, ``(..., L, V)``.

        Not the average over starts, which smears the caption over every position: this is
        what the figures print and the coherence classifiers (which take the maximum over
        positions) read.
        """
        return self.logits.softmax(-1)

    def log_prob(self, value: Tensor) -> Tensor:
        """``log p(x | z)`` of ``value`` ``(..., L, V)`` (one-hot or probabilities), ``(...)``."""
        log_p = self.logits.log_softmax(-1)
        length = log_p.shape[-2]
        # scores[..., j, t] = log p_j(x_t); skewed[..., j, s] = scores[..., j, j + s] (0 when
        # j + s >= L): row j of the (L, 2L) zero-padded scores read with stride 2L + 1
        scores = log_p @ value.transpose(-1, -2)
        flat = F.pad(F.pad(scores, (0, length)).flatten(-2), (0, length))
        skewed = flat.unflatten(-1, (length, 2 * length + 1))[..., :length]
        per_start = skewed.sum(-2)
        # start s needs padding at every position before it
        not_pad = 1 - value[..., self.pad]
        before = F.pad(not_pad.cumsum(-1), (1, 0))[..., :length]
        per_start = per_start.masked_fill(before > 0.5, -math.inf)
        return torch.logsumexp(per_start, -1) - math.log(length)
