"""Data-parallel training under ``torchrun``, equal to one process on the same global batch.

``torchrun --nproc_per_node=N train.py ...`` starts ``N`` processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment (:meth:`Processes.from_environment`).
Each holds the same model, wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`,
and trains on its share of every global batch of ``B`` points: a
:class:`~torch.utils.data.DistributedSampler` deals the shuffled points round robin, so
process ``r`` holds rows ``r, r + N, r + 2N, ...`` of the global batch, ``B / N`` of them.
DistributedDataParallel averages the gradients over the processes, so a step is the one
process's step on the global batch:

    ∇ (1/B) Σ_i ℓ_i  =  (1/N) Σ_r ∇ (N/B) Σ_{i held by r} ℓ_i.

The ELBO's reparameterised draws ``z_i = μ_i + σ_i ε_i`` must not depend on ``N`` either.
:class:`GlobalBatchNoise` draws ``ε`` for the *whole* global batch from a generator in the
same state on every process, and each process keeps its own rows: row ``i`` gets the same
``ε_i`` in every process count, and the generators stay in step because every process
draws the same shapes. With one process the generator is torch's default one, so a
one-process run draws exactly what it drew before this module existed.

This covers every Gaussian draw of the ELBO: the joint posteriors' (``poe``, ``wb``) and
the mixtures' components (``moe``, ``mopoe``, ``mwb``), with each of the mixture
estimators of :mod:`objectives` (``mixture_estimator``):

- ``"split"`` (MoPoE's, the default) gives row ``i`` of the global batch of ``B`` the
  component whose interval of its cumulative mixing weights holds the midpoint
  ``(i + 1/2) / B``. :meth:`GlobalBatchNoise.split_rsample` splits the *global* batch:
  process ``r``'s row ``j`` is global row ``i = j N + r`` and takes that row's component
  and noise, so the split is the one process's, not each process's own batch split anew.
- ``"all"`` decodes every component and chooses nothing.
- ``"sample"`` chooses one component per row at random from the mixing weights, which is
  not a Gaussian draw: each process draws it for its own rows from torch's default
  generator, seeded apart on every process, which keeps the estimator unbiased but is
  not the one process's choice.

What remains different is the order of the floating-point sums (each process sums its
rows, then the gradients are summed across processes) and the batch size each kernel sees:
the parameters agree to float32 round-off, not bitwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from model import MultimodalVAE
from objectives import elbo_loss, split_draws
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

import barycentric as bc


@dataclass(frozen=True)
class Processes:
    """Where this process stands among those ``torchrun`` started (one, without it).

    Attributes
    ----------
    rank : int
        This process's index ``0..world_size-1``; process 0 writes the run folder.
    world_size : int
        Number of processes ``N``.
    local_rank : int
        Index on this machine: the GPU this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Processes:
        """The ranks ``torchrun`` put in the environment; one process without them."""
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def is_main(self) -> bool:
        """Whether this is process 0, the one that writes and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    def device(self, kind: str) -> torch.device:
        """The device of this process: the CPU, or GPU ``local_rank`` for ``"cuda"``."""
        return torch.device("cuda", self.local_rank) if kind == "cuda" else torch.device("cpu")

    def start(self, device: torch.device) -> None:
        """Join the process group: NCCL between GPUs, gloo between CPU processes."""
        if not self.distributed:
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", rank=self.rank, world_size=self.world_size
        )

    def stop(self) -> None:
        """Leave the process group, if one was joined."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for alone)."""
        if self.distributed:
            dist.barrier()

    def mean(self, value: Tensor) -> Tensor:
        """The mean of a scalar over the processes: the global batch's loss from its shares."""
        if not self.distributed:
            return value
        total = value.detach().clone()
        dist.all_reduce(total)
        return total / self.world_size


@dataclass(frozen=True)
class GlobalBatchNoise:
    """Standard-normal noise drawn for the whole global batch, of which a process keeps its
    rows ``rank, rank + world_size, ...`` (as :class:`~torch.utils.data.DistributedSampler`
    deals them).

    Attributes
    ----------
    rank, world_size : int
        As in :class:`Processes`.
    generator : torch.Generator, optional
        In the same state on every process; ``None``: torch's default generator (one
        process).
    """

    rank: int = 0
    world_size: int = 1
    generator: torch.Generator | None = None

    def standard_normal(
        self, shape: Sequence[int], dim: int, dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        """``ε ~ N(0, I)`` of ``shape``, whose dimension ``dim`` holds this process's rows.

        The draw has ``world_size`` times as many rows along ``dim``; the result is its
        rows ``rank::world_size``. One process draws ``torch.empty(shape).normal_()``, as
        :meth:`torch.distributions.Normal.rsample` does.
        """
        full = list(shape)
        full[dim] *= self.world_size
        eps = torch.empty(full, dtype=dtype, device=device).normal_(generator=self.generator)
        return eps[(slice(None),) * dim + (slice(self.rank, None, self.world_size),)]

    def posterior(self, posterior: Distribution) -> Distribution:
        """``posterior`` (batch ``(B, ...)``) with its ``rsample`` drawing from this noise.

        A diagonal Gaussian is replaced; a mixture keeps its mixing distribution and gets
        its Gaussian components replaced.

        Raises
        ------
        TypeError
            For a posterior that is neither a diagonal Gaussian nor a mixture of them.
        """
        if isinstance(posterior, MixtureSameFamily):
            return _GlobalNoiseMixture(posterior, self)
        if isinstance(posterior, Independent) and isinstance(posterior.base_dist, Normal):
            return _GlobalNoiseNormal(posterior, self)
        raise TypeError(f"no global-batch noise for a {type(posterior).__name__} posterior")

    def split_rsample(self, mixture: MixtureSameFamily) -> tuple[Tensor, Tensor]:
        """:func:`barycentric.split_rsample` of the global batch, at this process's rows.

        The split gives each row the component whose interval of its own cumulative
        mixing weights holds the row's midpoint, ``(i + 1/2) / (B N)`` for global row
        ``i`` of ``B N``, and ``split_rsample`` takes the rows of a batch in row-major
        order. So the mixture with each of this process's ``B`` rows repeated ``N`` times,
        batch ``(B, N)``, has at ``(j, r)`` global row ``j N + r``'s midpoint: its split
        is the global batch's, and its noise, ``(B, N, d)`` from the shared generator, is
        the global batch's too. This process keeps column ``rank``, as
        :meth:`standard_normal` keeps its rows; one process keeps everything (``N = 1``).

        The repeated mixing weights are rebuilt from the logits, which gives back the
        weights of barycentric's mixtures (uniform over the subsets present in a row, 0
        elsewhere) bitwise, so that one process splits as :func:`barycentric.split_rsample`
        does. Rebuilt from ``probs``, they are renormalised, which moves some by an ulp:
        enough to move a row whose midpoint is a cumulative weight in exact arithmetic to
        another component.

        Parameters
        ----------
        mixture : MixtureSameFamily
            Batch ``(B,)``: this process's rows; ``S`` diagonal Gaussian components;
            mixing weights built from logits, ``-inf`` where a weight is 0.

        Returns
        -------
        z : Tensor
            ``(B, d)``: one reparameterised draw per row.
        component : Tensor
            ``(B,)`` int64: the component each row drew from.
        """
        rows = (*mixture.batch_shape, self.world_size)
        components = mixture.component_distribution.base_dist
        global_batch = MixtureSameFamily(
            Categorical(
                logits=mixture.mixture_distribution.logits.unsqueeze(-2).expand(*rows, -1),
                validate_args=False,
            ),
            Independent(
                Normal(
                    components.loc.unsqueeze(-3).expand(*rows, -1, -1),
                    components.scale.unsqueeze(-3).expand(*rows, -1, -1),
                    validate_args=False,
                ),
                1,
                validate_args=False,
            ),
            validate_args=False,
        )
        z, component = bc.split_rsample(global_batch, generator=self.generator)
        return z[:, self.rank], component[:, self.rank]


class _GlobalNoiseNormal(Independent):
    """A diagonal Gaussian whose ``rsample`` reads :class:`GlobalBatchNoise`."""

    def __init__(self, posterior: Independent, noise: GlobalBatchNoise) -> None:
        super().__init__(
            posterior.base_dist, posterior.reinterpreted_batch_ndims, validate_args=False
        )
        self.noise = noise

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        sample_shape = torch.Size(sample_shape)
        base = self.base_dist
        eps = self.noise.standard_normal(
            self._extended_shape(sample_shape), len(sample_shape), base.loc.dtype, base.loc.device
        )
        return base.loc + eps * base.scale


class _GlobalNoiseMixture(MixtureSameFamily):
    """A mixture whose components are :class:`_GlobalNoiseNormal` and whose split
    (:func:`objectives.split_draws`) is :meth:`GlobalBatchNoise.split_rsample`."""

    def __init__(self, posterior: MixtureSameFamily, noise: GlobalBatchNoise) -> None:
        components = noise.posterior(posterior.component_distribution)
        super().__init__(posterior.mixture_distribution, components, validate_args=False)
        self.noise = noise


@split_draws.register
def _split_the_global_batch(posterior: _GlobalNoiseMixture) -> tuple[Tensor, Tensor]:
    return posterior.noise.split_rsample(posterior)


class _WithGlobalNoise:
    """``model`` as the ELBO sees it: its posteriors draw from a :class:`GlobalBatchNoise`."""

    def __init__(self, model: MultimodalVAE, noise: GlobalBatchNoise) -> None:
        self._model, self._noise = model, noise

    def encode(self, xs: Sequence[Tensor], mask: Tensor | None = None) -> Distribution:
        return self._noise.posterior(self._model.encode(xs, mask))

    def __getattr__(self, name: str):
        return getattr(self._model, name)


class TrainingObjective(nn.Module):
    """The negative ELBO of a batch as a module, which DistributedDataParallel wraps: it
    synchronises the gradients of what ``forward`` computes.

    Parameters
    ----------
    model : MultimodalVAE
    noise : GlobalBatchNoise
        The reparameterisation noise of the posteriors.
    beta : float
        Weight of the KL term.
    estimator : {"split", "sample", "all"}
        Mixtures: the reconstruction term's estimator (see :func:`objectives.elbo_terms`).
    """

    def __init__(
        self, model: MultimodalVAE, noise: GlobalBatchNoise, *, beta: float, estimator: str
    ) -> None:
        super().__init__()
        self.model, self.noise = model, noise
        self.beta, self.estimator = beta, estimator

    def forward(self, xs: Sequence[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, terms)`` of :func:`objectives.elbo_loss` on this process's rows."""
        return elbo_loss(
            _WithGlobalNoise(self.model, self.noise),
            xs,
            beta=self.beta,
            estimator=self.estimator,
        )
