"""The multimodal VAE: one encoder and decoder per modality around a barycentric aggregation.

Every aggregation of the paper is one call of :mod:`barycentric` on the unimodal experts
``q(z | x_m) = N(μ_m, diag σ_m²)``, stacked along batch dimension ``-1``:

========  ====================  =======================================================
name      model                 joint posterior
========  ====================  =======================================================
``poe``   MVAE                  product of the experts and the prior N(0, I)
``moe``   MMVAE                 uniform mixture of the experts (singleton subsets)
``mopoe`` MoPoE                 mixture over subsets of products of experts (PoEs)
``wb``    WB-VAE                2-Wasserstein barycenter of the experts
``mwb``   MWB-VAE               mixture over subsets of 2-Wasserstein barycenters
========  ====================  =======================================================

A missing modality is a ``False`` in ``mask``: its expert gets zero weight, so its input is
never read by the posterior.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from data import ModalitySpec, get_dataset
from data.celeba_text import PAD
from data.mnist_svhn_text import ALPHABET
from networks import make_decoder, make_encoder
from shifted_text import ShiftedCategorical
from torch import Tensor, nn
from torch.distributions import (
    Bernoulli,
    Distribution,
    Independent,
    Laplace,
    Normal,
    OneHotCategorical,
)

import barycentric as bc

#: Fixed scale of the Laplace and Gaussian likelihoods, as in MMVAE and MoPoE.
LIKELIHOOD_SCALE = 0.75


def _laplace(mean: Tensor, spec: ModalitySpec) -> Distribution:
    return Independent(Laplace(mean, LIKELIHOOD_SCALE), len(spec.shape))


def _gaussian(mean: Tensor, spec: ModalitySpec) -> Distribution:
    return Independent(Normal(mean, LIKELIHOOD_SCALE), len(spec.shape))


def _categorical(logits: Tensor, spec: ModalitySpec) -> Distribution:
    # One categorical per position: the last axis is the vocabulary.
    return Independent(OneHotCategorical(logits=logits), len(spec.shape) - 1)


def _shifted_categorical(logits: Tensor, spec: ModalitySpec) -> Distribution:
    # The caption from any start after MoPoE's padding character.
    return ShiftedCategorical(logits, ALPHABET.index(PAD))


def _bernoulli(logits: Tensor, spec: ModalitySpec) -> Distribution:
    # Images in [0, 1] are scored with the Bernoulli density too, hence no support check.
    return Independent(Bernoulli(logits=logits, validate_args=False), len(spec.shape))


#: Likelihood name → builder of ``p(x_m | z)`` from the decoder's output.
LIKELIHOODS: dict[str, Callable[[Tensor, ModalitySpec], Distribution]] = {
    "laplace": _laplace,
    "gaussian": _gaussian,
    "categorical": _categorical,
    "shifted-categorical": _shifted_categorical,
    "bernoulli": _bernoulli,
}


def standard_normal(batch_shape: torch.Size, latent_dim: int, like: Tensor) -> Independent:
    """The prior ``N(0, I)`` on ``latent_dim`` dims with ``batch_shape``, on ``like``'s device."""
    zeros = like.new_zeros((*batch_shape, latent_dim))
    return Independent(Normal(zeros, torch.ones_like(zeros)), 1)


def _product_of_experts(experts: Independent, mask: Tensor | None) -> Distribution:
    prior = standard_normal(experts.batch_shape[:-1], experts.event_shape[-1], experts.mean)
    return bc.product_of_experts(experts, mask=mask, prior=prior)


def _wasserstein_barycenter(experts: Independent, mask: Tensor | None) -> Distribution:
    return bc.wasserstein_barycenter(experts, mask=mask)


def _mixture_of_experts(experts: Independent, mask: Tensor | None) -> Distribution:
    return bc.mixture_of_barycenters(experts, "singletons", mask=mask)


def _mixture_of_products(experts: Independent, mask: Tensor | None) -> Distribution:
    """MoPoE as Sutter et al.'s code builds it: :func:`barycentric.mixture_of_products` over
    all non-empty subsets, with the prior N(0, I) in the full set's product only, and only
    where every modality is observed (their ``poe_fusion``): the prior joins as expert
    ``M + 1``, a member of the full set alone, masked in rows with a missing modality."""
    loc, scale = experts.base_dist.loc, experts.base_dist.scale  # (..., M, d)
    members = bc.functional.subset_masks("all", loc.shape[-2], loc.device)  # (S, M)
    with_prior = Independent(
        Normal(
            torch.cat([loc, torch.zeros_like(loc[..., :1, :])], -2),
            torch.cat([scale, torch.ones_like(scale[..., :1, :])], -2),
        ),
        1,
    )
    subsets = torch.cat([members, members.all(-1, keepdim=True)], -1)  # (S, M + 1)
    if mask is not None:
        mask = torch.cat([mask, mask.all(-1, keepdim=True)], -1)
    return bc.mixture_of_products(with_prior, subsets, mask=mask)


def _mixture_of_wasserstein(experts: Independent, mask: Tensor | None) -> Distribution:
    return bc.mixture_of_barycenters(experts, "all", divergence="wasserstein", mask=mask)


_AGGREGATORS: dict[str, Callable[[Independent, Tensor | None], Distribution]] = {
    "poe": _product_of_experts,
    "moe": _mixture_of_experts,
    "mopoe": _mixture_of_products,
    "wb": _wasserstein_barycenter,
    "mwb": _mixture_of_wasserstein,
}

#: Names of the aggregations, in the order of the paper's tables.
AGGREGATIONS: tuple[str, ...] = tuple(_AGGREGATORS)


class MultimodalVAE(nn.Module):
    """A VAE over ``M`` modalities whose joint posterior aggregates the unimodal experts.

    Parameters
    ----------
    specs : sequence of ModalitySpec
        The modalities, in the order of the inputs.
    latent_dim : int
        Dimension ``d`` of the latent space.
    aggregation : str
        One of :data:`AGGREGATIONS`.
    likelihoods : mapping of str to str, optional
        Modality name → likelihood name (one of :data:`LIKELIHOODS`), overriding
        ``spec.likelihood``; :attr:`specs` holds the result.

    Raises
    ------
    ValueError
        For an unknown aggregation, likelihood or modality name.
    """

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        latent_dim: int,
        aggregation: str,
        likelihoods: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if aggregation not in _AGGREGATORS:
            raise ValueError(
                f"unknown aggregation {aggregation!r}; expected one of {', '.join(AGGREGATIONS)}"
            )
        overrides = dict(likelihoods or {})
        names = [spec.name for spec in specs]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(f"likelihoods names unknown modalities {unknown}; known: {names}")
        # The decoder's output layer follows the likelihood, so overrides go into the specs.
        self.specs = tuple(
            replace(spec, likelihood=overrides.get(spec.name, spec.likelihood)) for spec in specs
        )
        self.latent_dim = latent_dim
        self.aggregation = aggregation
        self._aggregate = _AGGREGATORS[aggregation]
        self.encoders = nn.ModuleList(make_encoder(spec, latent_dim) for spec in self.specs)
        self.decoders = nn.ModuleList(make_decoder(spec, latent_dim) for spec in self.specs)

    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        checkpoint: str = "checkpoint.pt",
    ) -> MultimodalVAE:
        """The trained model of a run folder that ``train.py`` wrote, in evaluation mode.

        The modalities, latent size, aggregation and likelihoods come from the checkpoint
        (checkpoints written before it recorded the modalities read them from the dataset
        its configuration names), and so do the weights.

        Parameters
        ----------
        run_dir : path
            The run folder.
        device : str or torch.device
            Where the model goes.
        checkpoint : str
            ``"checkpoint.pt"``, the last one, or ``"best.pt"``, the best by test loss
            (written by ``train.py --keep-best``).

        Raises
        ------
        FileNotFoundError
            If ``run_dir`` holds no ``checkpoint``.
        ValueError
            If the file cannot be read as a checkpoint.

        Examples
        --------
        ``xs`` is a list of one ``(B, *spec.shape)`` batch per modality, ``mask`` a
        ``(B, M)`` bool tensor that is ``False`` where a modality is missing::

            model = MultimodalVAE.from_run("runs/demo-mwb")
            experts = model.experts(xs)                  # q(z | x_m), batch (B, M)
            posterior = model.aggregate(experts, mask)   # q(z | X_S), batch (B,)
            z = posterior.mean                           # or posterior.sample()
            generated = [p.mean for p in model.decode(z)]  # every modality from X_S
            samples = model.generate(16)                 # from the prior
        """
        path = Path(run_dir) / checkpoint
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {checkpoint}")
        try:
            saved = torch.load(path, map_location=device, weights_only=True)
        except Exception as error:  # torch raises many types for a damaged file
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(f"cannot read checkpoint {path}: {reason}") from error
        config = saved["config"]
        if "specs" in saved:
            specs = [ModalitySpec(**{**s, "shape": tuple(s["shape"])}) for s in saved["specs"]]
        else:
            specs = get_dataset(config["dataset"], "test", config["data_root"]).specs
        model = cls(specs, config["latent_dim"], config["aggregation"], config["likelihoods"])
        model.load_state_dict(saved["model"])
        return model.to(device).eval()

    @property
    def num_modalities(self) -> int:
        """Number ``M`` of modalities."""
        return len(self.specs)

    def prior(self, batch_shape: torch.Size | tuple[int, ...] = ()) -> Independent:
        """The prior ``p(z) = N(0, I)`` with ``batch_shape``, on the model's device."""
        return standard_normal(torch.Size(batch_shape), self.latent_dim, self._any_parameter())

    def experts(self, xs: Sequence[Tensor]) -> Independent:
        """The unimodal posteriors ``q(z | x_m)``, batch ``(B, M)``, event ``(d,)``."""
        params = [encoder(x) for encoder, x in zip(self.encoders, xs, strict=True)]
        loc = torch.stack([loc for loc, _ in params], -2)
        scale = torch.stack([scale for _, scale in params], -2)
        return Independent(Normal(loc, scale), 1)

    def aggregate(self, experts: Independent, mask: Tensor | None = None) -> Distribution:
        """The joint posterior ``q(z | X_S)`` from the experts of :meth:`experts`.

        Parameters
        ----------
        experts : Independent
            Batch ``(B, M)``, event ``(d,)``.
        mask : Tensor, optional
            ``(B, M)`` bool, ``False`` where a modality is missing; ``None``: all observed.

        Returns
        -------
        Distribution
            Batch ``(B,)``, event ``(d,)``: ``Independent(Normal)`` for ``poe``/``wb``,
            ``MixtureSameFamily`` over subsets for ``moe``/``mopoe``/``mwb``.
        """
        return self._aggregate(experts, mask)

    def encode(self, xs: Sequence[Tensor], mask: Tensor | None = None) -> Distribution:
        """The joint posterior ``q(z | X_S)`` of the observed modalities ``S``.

        Parameters
        ----------
        xs : sequence of Tensor
            One ``(B, *spec.shape)`` batch per modality; entries of missing modalities are
            read by their encoder but get zero weight.
        mask : Tensor, optional
            ``(B, M)`` bool, ``False`` where a modality is missing; ``None``: all observed.

        Returns
        -------
        Distribution
            See :meth:`aggregate`.
        """
        return self.aggregate(self.experts(xs), mask)

    def forward(self, xs: Sequence[Tensor], mask: Tensor | None = None) -> Distribution:
        """Same as :meth:`encode`."""
        return self.encode(xs, mask)

    def decode(self, z: Tensor, modalities: Sequence[int] | None = None) -> list[Distribution]:
        """The likelihoods ``p(x_m | z)``, batch ``z.shape[:-1]``.

        Parameters
        ----------
        z : Tensor
            ``(..., d)`` latent codes.
        modalities : sequence of int, optional
            Indices of the modalities to decode, in the order returned; ``None``: all.
        """
        flat = z.reshape(-1, z.shape[-1])
        return [
            LIKELIHOODS[self.specs[m].likelihood](
                self.decoders[m](flat).unflatten(0, z.shape[:-1]), self.specs[m]
            )
            for m in (range(self.num_modalities) if modalities is None else modalities)
        ]

    @torch.no_grad()
    def generate(self, n: int) -> list[Tensor]:
        """Mean of every modality's likelihood at ``n`` draws ``z ~ p(z)``."""
        return [likelihood.mean for likelihood in self.decode(self.prior((n,)).sample())]

    @torch.no_grad()
    def cond_generate(self, xs: Sequence[Tensor], mask: Tensor | None = None) -> list[Tensor]:
        """Every modality generated from the observed ones: likelihood means at ``z ~ q(z | X_S)``.

        Returns
        -------
        list of Tensor
            One ``(B, *spec.shape)`` per modality: image means, text and attribute
            probabilities.
        """
        return [likelihood.mean for likelihood in self.decode(self.encode(xs, mask).sample())]

    def _any_parameter(self) -> Tensor:
        return next(self.parameters())
