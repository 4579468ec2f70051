"""The caption likelihood with its start summed out, against a sum over starts in Python."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from shifted_text import ShiftedCategorical
from torch.nn.functional import one_hot


def _brute_log_prob(logits: torch.Tensor, text: list[int], pad: int) -> float:
    length = len(text)
    log_p = logits.log_softmax(-1)
    terms = [
        sum(log_p[j, text[s + j]] for j in range(length - s))
        for s in range(length)
        if all(c == pad for c in text[:s])
    ]
    return (torch.logsumexp(torch.stack([torch.as_tensor(t) for t in terms]), 0)).item() - (
        math.log(length)
    )


@pytest.mark.parametrize("seed", range(3))
def test_log_prob_sums_over_every_start_the_padding_allows(seed):
    torch.manual_seed(seed)
    length, vocab, pad = 9, 6, 2
    logits = torch.randn(4, length, vocab, dtype=torch.float64)
    texts = torch.full((4, length), pad)
    texts[0, 3:6] = torch.tensor([0, 1, 3])  # a caption at start 3
    texts[1, 0] = 5  # a caption at start 0: one start only
    texts[2] = torch.randint(0, vocab, (length,))  # anything
    # row 3: padding only, every start
    got = ShiftedCategorical(logits, pad).log_prob(one_hot(texts, vocab).double())
    want = [_brute_log_prob(logits[b], texts[b].tolist(), pad) for b in range(4)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


def test_probabilities_of_every_text_sum_to_one():
    length, vocab = 4, 3
    distribution = ShiftedCategorical(torch.randn(length, vocab, dtype=torch.float64), 1)
    texts = torch.tensor(list(itertools.product(range(vocab), repeat=length)))
    total = distribution.log_prob(one_hot(texts, vocab).double()).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))


def test_a_caption_scores_the_same_from_every_start_that_fits():
    """Logits sure of one caption: the text at start s has probability 1/L for every s."""
    length, vocab, pad = 12, 5, 4
    caption = torch.tensor([0, 1, 2, 3])
    canonical = torch.full((length,), pad)
    canonical[:4] = caption
    logits = 50.0 * one_hot(canonical, vocab).double()
    for start in range(length - 4 + 1):
        text = torch.full((length,), pad)
        text[start : start + 4] = caption
        log_p = ShiftedCategorical(logits, pad).log_prob(one_hot(text, vocab).double())
        torch.testing.assert_close(log_p, torch.tensor(-math.log(length), dtype=torch.float64))


def test_batch_broadcasting_and_mean():
    logits = torch.randn(3, 2, 7, 5)
    text = one_hot(torch.randint(0, 5, (3, 1, 7)), 5).float()
    distribution = ShiftedCategorical(logits, 0)
    assert distribution.batch_shape == (3, 2) and distribution.event_shape == (7, 5)
    assert distribution.log_prob(text).shape == (3, 2)
    torch.testing.assert_close(distribution.mean, logits.softmax(-1))


def test_gradients_match_finite_differences():
    logits = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    text = one_hot(torch.tensor([[3, 3, 0, 1, 3, 3], [2, 3, 3, 3, 3, 3]]), 4).double()
    assert torch.autograd.gradcheck(lambda lg: ShiftedCategorical(lg, 3).log_prob(text), (logits,))


@pytest.mark.parametrize(
    ("shape", "pad", "message"),
    [((5,), 0, "logits must be"), ((3, 5), 5, "pad must"), ((3, 5), -1, "pad must")],
)
def test_bad_arguments_raise(shape, pad, message):
    with pytest.raises(ValueError, match=message):
        ShiftedCategorical(torch.zeros(shape), pad)
