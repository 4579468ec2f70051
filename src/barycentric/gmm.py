r"""Barycenters of Gaussian mixtures in the mixture-Wasserstein distance :math:`MW_2`.

Delon & Desolneux (2020) restrict optimal transport between Gaussian mixtures to couplings
that are themselves Gaussian mixtures. The resulting distance :math:`MW_2` is a discrete
optimal transport problem between the mixing weights whose ground cost is the squared
Bures–Wasserstein distance between components. Its barycenter is a multi-marginal
problem over the tuples of components, one component per input mixture; every tuple's
Gaussian barycenter is computed in one batched call, and only the small linear program
on the mixing weights is solved on the CPU.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.distributions import Categorical, MixtureSameFamily

from barycentric._entry import entry_point
from barycentric._families import DIAGONAL, FULL, Family, family_of
from barycentric._validation import check_finite, check_not_complex
from barycentric.functional._experts import prepare_weights
from barycentric.linalg import power_of_two_scale

__all__ = ["MAX_TUPLES", "gmm_barycenter"]

MAX_TUPLES = 1_000_000
"""Largest number :math:`\\prod_k J_k` of component tuples :func:`gmm_barycenter` accepts."""

# A plan entry at or below this mass (the plan sums to 1) is solver round-off: HiGHS and
# the network simplex leave non-basic entries at exactly 0 and basic ones within their
# feasibility tolerance of the truth.
_NEGLIGIBLE_MASS = 1e-10


@entry_point
def gmm_barycenter(
    mixtures: Sequence[MixtureSameFamily],
    weights: torch.Tensor | Sequence[float] | None = None,
    *,
    max_iter: int = 100,
    tol: float | None = None,
    backward: Literal["implicit", "unroll"] = "implicit",
    return_plan: bool = False,
) -> MixtureSameFamily | tuple[MixtureSameFamily, torch.Tensor, torch.Tensor]:
    r"""Barycenter of Gaussian mixtures in the mixture-Wasserstein distance :math:`MW_2`.

    For Gaussian mixtures :math:`\nu_k = \sum_{j=1}^{J_k} a_{k,j}\, \mathcal N_{k,j}`,
    :math:`k = 1..K`, and weights :math:`\lambda` on the simplex, this returns a solution of

    .. math::

        \min_{\mu \in GMM} \sum_{k=1}^K \lambda_k\, MW_2^2(\mu, \nu_k),
        \qquad
        MW_2^2(\mu, \nu) = \min_{w \in \Pi(\pi, a)} \sum_{i,j} w_{ij}\,
            W_2^2(\mathcal N_i, \mathcal N_j),

    where :math:`MW_2` is the Wasserstein distance restricted to couplings that are
    Gaussian mixtures (Delon & Desolneux 2020). Its solution is (their Section 5) the
    mixture

    .. math::

        \mu^\star = \sum_{t} w^\star_t\, B_t, \qquad
        B_t = \arg\min_{\mathcal N} \sum_k \lambda_k W_2^2(\mathcal N, \mathcal N_{k,t_k}),

    over the tuples :math:`t = (t_1, \dots, t_K)`, :math:`t_k \in 1..J_k`, where
    :math:`B_t` is the 2-Wasserstein barycenter of the tuple's components and
    :math:`w^\star` solves the multi-marginal transport problem

    .. math::

        \min_{w \ge 0} \sum_t w_t\, C_t \quad \text{s.t.}\quad
        \sum_{t : t_k = j} w_t = a_{k,j} \;\; \forall k, j, \qquad
        C_t = \sum_k \lambda_k W_2^2(\mathcal N_{k,t_k}, B_t).

    Its optimal value :math:`\sum_t w^\star_t C_t` is the barycenter's objective
    :math:`\sum_k \lambda_k MW_2^2(\mu^\star, \nu_k)`. The :math:`\prod_k J_k` tuple
    barycenters are computed in one batched call of
    :func:`~barycentric.functional.wasserstein_barycenter_full` (the closed form
    :func:`~barycentric.functional.wasserstein_barycenter_diag` when every mixture is
    diagonal); the linear program is solved on the CPU in float64 by POT's network simplex
    (:func:`ot.emd`) for :math:`K = 2` and by HiGHS' dual simplex
    (:func:`scipy.optimize.linprog`) for :math:`K > 2`. Both return a vertex of the
    transport polytope, so at most :math:`\sum_k J_k - K + 1` tuples carry mass; the
    output keeps exactly those (entries of mass at most 1e-10 are treated as round-off,
    dropped, and the kept masses renormalised).

    Parameters
    ----------
    mixtures : sequence of K MixtureSameFamily
        Unbatched mixtures (``batch_shape == ()``) whose ``component_distribution`` is a
        batch of ``J_k`` diagonal (``Independent(Normal, 1)``) or full
        (``MultivariateNormal``) Gaussians with a common event size ``d``. Batched
        mixtures are not supported: the linear program differs per batch element, so
        loop over the batch.
    weights : Tensor or sequence of float, shape (K,), optional
        Barycentric weights :math:`\lambda`, non-negative, normalised to sum to 1.
        ``None``: uniform. A zero weight drops that mixture's cost term; its mixing
        weights still constrain the plan.
    max_iter, tol, backward
        Settings of the Gaussian barycenter fixed point for full covariances (see
        :func:`~barycentric.functional.wasserstein_barycenter_full`); unused when all
        mixtures are diagonal.
    return_plan : bool
        Also return the optimal plan and the objective value.

    Returns
    -------
    MixtureSameFamily
        Batch shape ``()``; ``S`` components: the :math:`B_t` of the tuples with positive
        mass, in lexicographic order of :math:`t`, with mixing weights :math:`w^\star_t`.
        Full covariance (``MultivariateNormal``) if any input is full, else diagonal.
    plan : Tensor, shape (J_1, ..., J_K)
        Only with ``return_plan``: :math:`w^\star`, round-off entries set to 0.
    objective : Tensor, shape ()
        Only with ``return_plan``: :math:`\sum_t w^\star_t C_t`.

    Raises
    ------
    ValueError
        Naming the argument, for: an empty ``mixtures``; an entry that is not a
        ``MixtureSameFamily`` of Gaussians, is batched or has no components; event size 0
        or different event sizes; ``weights`` with the wrong number of entries, negative,
        NaN or infinite, complex, or all zero; a mean or covariance that is not finite
        (when torch.distributions' validation is off, from the cost it makes); more than
        :data:`MAX_TUPLES` (:math:`10^6`) tuples.

    Warns
    -----
    RuntimeWarning
        With ``return_plan``, when the objective is outside the normal range of the
        mixtures' dtype (it scales with the square of the mixtures: in float32, mixtures
        whose components are about :math:`10^{19}` apart, or :math:`10^{-19}`); the warning
        gives its value. The barycenter and the plan are unaffected.

    Notes
    -----
    **Size.** Memory and time grow with :math:`\prod_k J_k` (every tuple's barycenter and
    cost are formed), which is therefore capped at :data:`MAX_TUPLES`.

    **Scale.** The means are divided by a power of two near their largest magnitude and
    the covariances by the square of one near the largest standard deviation before any
    barycenter or cost is formed, and the results multiplied back (exactly): nothing
    underflows or overflows on the way for any mixture the dtype holds. The linear
    program's solvers (the network simplex, HiGHS) stop on absolute tolerances, so they
    see the costs, in float64, divided by a power of two near the largest one. The plan is
    therefore the same for the mixtures scaled by any factor, the components scale with
    it, and the objective with its square.

    **Gradients.** The components :math:`B_t` and the objective are differentiable with
    respect to the components' means, scales or covariances and to ``weights``. The plan
    :math:`w^\star` is held constant: it is piecewise constant in the costs, so the
    gradient of the objective is exact wherever the optimal plan is unique (Danskin's
    theorem: the derivative of an LP's optimal value with respect to its costs is the
    plan). No gradient flows to the input mixing weights, nor to the output mixing
    weights.

    **Devices.** Outputs keep the dtype and device of the inputs; only the cost tensor
    visits the CPU, as float64 numpy, for the linear program.

    References
    ----------
    Delon, J., & Desolneux, A. (2020). A Wasserstein-type distance in the space of
    Gaussian mixture models. *SIAM J. Imaging Sci.* 13(2), 936–970.

    Examples
    --------
    Two one-dimensional mixtures with two components each: the barycenter pairs the
    nearby components and places each pair's barycenter half-way.

    >>> import torch
    >>> from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal
    >>> import barycentric as bc
    >>> def gmm(locs, scales, probs):
    ...     components = Independent(Normal(torch.tensor(locs), torch.tensor(scales)), 1)
    ...     return MixtureSameFamily(Categorical(torch.tensor(probs)), components)
    >>> nu0 = gmm([[0.0], [10.0]], [[1.0], [1.0]], [0.5, 0.5])
    >>> nu1 = gmm([[2.0], [12.0]], [[3.0], [1.0]], [0.5, 0.5])
    >>> mu, plan, objective = bc.gmm_barycenter([nu0, nu1], return_plan=True)
    >>> mu.component_distribution.mean.squeeze(-1), mu.component_distribution.stddev.squeeze(-1)
    (tensor([ 1., 11.]), tensor([2., 1.]))
    >>> mu.mixture_distribution.probs
    tensor([0.5000, 0.5000])
    >>> plan
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]])
    >>> objective  # λ0 λ1 MW2²(ν0, ν1) = 1/4 · (½ (2² + 2²) + ½ (2² + 0))
    tensor(1.5000)
    """
    family, params, masses = _unpack_mixtures(mixtures)
    sizes = tuple(len(mass) for mass in masses)
    count = math.prod(sizes)
    if count > MAX_TUPLES:
        raise ValueError(
            f"`mixtures` have {' x '.join(map(str, sizes))} = {count} component tuples, more "
            f"than MAX_TUPLES = {MAX_TUPLES}; the multi-marginal problem would not fit"
        )
    locs, spreads, loc_scale, spread_scale = _normalised(family, params)
    if weights is not None:
        check_not_complex(weights, "weights")
        weights = torch.as_tensor(weights, dtype=locs[0].dtype, device=locs[0].device)
        if weights.shape != (len(mixtures),):
            raise ValueError(
                f"`weights` must have shape ({len(mixtures)},), one per mixture, got "
                f"{tuple(weights.shape)}"
            )
    tuple_loc = _tuples(locs, sizes, event_dims=1)
    tuple_spread = _tuples(spreads, sizes, event_dims=family.spread_dims)
    weights = prepare_weights(weights, tuple_loc.shape[:-1], tuple_loc)
    loc, spread = family.wasserstein(
        tuple_loc, tuple_spread, weights, max_iter=max_iter, tol=tol, backward=backward
    )
    # W2² = ‖Δμ‖² + Bures²: each term in its own unit, loc_scale² and spread_scale²
    mean_cost = (weights * (tuple_loc - loc.unsqueeze(-2)).square().sum(-1)).sum(-1)
    origin = loc.new_zeros(loc.shape[-1])
    bures = family.distance(origin, tuple_spread, origin, spread.unsqueeze(-1 - family.spread_dims))
    spread_cost = (weights * bures).sum(-1)
    # the LP's cost in float64, in the unit of the larger scale's square (powers of two)
    unit = torch.maximum(loc_scale, spread_scale).double()
    relative = (
        mean_cost.detach().double() * (loc_scale.double() / unit) ** 2
        + spread_cost.detach().double() * (spread_scale.double() / unit) ** 2
    ).reshape(sizes)
    largest = relative.abs().amax()
    if not bool(torch.isfinite(largest)):
        raise ValueError(
            "`mixtures`: a tuple of components has a Wasserstein cost that is not finite "
            "(a mean or a covariance is not finite)"
        )
    # the solvers' tolerances are absolute: the cost goes in divided by a power of two
    # near its largest entry (exactly), so the plan does not depend on the cost's scale
    plan = _multimarginal_plan(
        (relative / power_of_two_scale(largest)).cpu().numpy(),
        [m.detach().cpu().double().numpy() for m in masses],
    )
    plan = torch.as_tensor(plan, dtype=loc.dtype, device=loc.device)
    kept = plan.reshape(-1).nonzero().squeeze(-1)
    spread_unit = spread_scale * spread_scale if family.full else spread_scale
    mixture = MixtureSameFamily(
        Categorical(probs=plan.reshape(-1)[kept]),
        family.pack(loc[kept] * loc_scale, spread[kept] * spread_unit),
    )
    if not return_plan:
        return mixture
    flat = plan.reshape(-1)
    objective = (flat * mean_cost).sum() * loc_scale * loc_scale + (
        flat * spread_cost
    ).sum() * spread_scale * spread_scale
    _warn_unrepresentable(objective, float((plan.double().cpu() * relative.cpu()).sum()), unit)
    return mixture, plan, objective


def _unpack_mixtures(
    mixtures: Sequence[MixtureSameFamily],
) -> tuple[Family, list[tuple[Family, torch.Tensor, torch.Tensor]], list[torch.Tensor]]:
    """Check the mixtures; return the family of the barycenter (full covariance if any
    mixture is), every mixture's family, locs and spreads, and every mixture's weights."""
    if not isinstance(mixtures, Sequence):
        raise ValueError(
            f"`mixtures` must be a sequence of MixtureSameFamily, got {type(mixtures).__name__}"
        )
    if len(mixtures) == 0:
        raise ValueError("`mixtures` is an empty sequence")
    params, masses = [], []
    for i, mixture in enumerate(mixtures):
        name = f"mixtures[{i}]"
        if not isinstance(mixture, MixtureSameFamily):
            raise ValueError(f"`{name}` must be a MixtureSameFamily, got {type(mixture).__name__}")
        if mixture.batch_shape != ():
            raise ValueError(
                f"`{name}` has batch shape {tuple(mixture.batch_shape)}; only unbatched "
                "mixtures (batch shape ()) are supported, loop over the batch"
            )
        family = family_of(mixture.component_distribution, f"{name}.component_distribution")
        if mixture.component_distribution.batch_shape[-1] == 0:
            raise ValueError(f"`{name}` has no components")
        loc, spread = family.unpack(mixture.component_distribution)
        check_finite(loc, f"{name}.component_distribution")
        check_finite(spread, f"{name}.component_distribution")
        params.append((family, loc, spread))
        masses.append(mixture.mixture_distribution.probs)
    sizes = {loc.shape[-1] for _, loc, _ in params}
    if len(sizes) > 1:
        raise ValueError(f"`mixtures` have different event sizes {sorted(sizes)}")
    family = DIAGONAL if all(family is DIAGONAL for family, _, _ in params) else FULL
    return family, params, masses


def _normalised(
    family: Family, params: list[tuple[Family, torch.Tensor, torch.Tensor]]
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The locs divided by a power of two ``loc_scale`` near their largest magnitude, and
    the spreads, as ``family``'s, in units of a power of two ``spread_scale`` near the
    largest standard deviation (covariances divided by its square); and the two scales.

    Diagonal spreads are divided before they are squared into covariances, so neither
    underflows nor overflows for any parameters the dtype holds.
    """
    magnitudes, deviations = [], []
    for own, loc, spread in params:
        magnitudes.append(loc.detach().abs().amax())
        variances = spread.detach().diagonal(dim1=-2, dim2=-1) if own.full else None
        deviations.append(spread.detach().amax() if variances is None else variances.amax().sqrt())
    loc_scale = power_of_two_scale(torch.stack(magnitudes).amax())
    spread_scale = power_of_two_scale(torch.stack(deviations).amax())
    locs, spreads = [], []
    for own, loc, spread in params:
        locs.append(loc / loc_scale)
        if own.full:
            spreads.append(spread / spread_scale / spread_scale)
        else:
            scaled = spread / spread_scale
            spreads.append(own.to_full(scaled) if family.full else scaled)
    return locs, spreads, loc_scale, spread_scale


def _warn_unrepresentable(objective: torch.Tensor, relative: float, unit: torch.Tensor) -> None:
    """Warn if ``objective``, whose value is ``relative · unit²``, overflowed or underflowed
    its dtype (beyond the normal range: subnormals have lost digits)."""
    info = torch.finfo(objective.dtype)
    value = abs(float(objective.detach()))
    if relative <= 0 or info.tiny <= value <= info.max:
        return
    exponent = math.log10(relative) + 2 * math.log10(float(unit))
    warnings.warn(
        f"the objective, {10 ** (exponent % 1):.4f}e{math.floor(exponent):+d}, is outside the "
        f"normal range of {objective.dtype} and is returned as {value:.3g}; the barycenter "
        "and the plan are unaffected",
        RuntimeWarning,
        stacklevel=3,
    )


def _tuples(params: list[torch.Tensor], sizes: tuple[int, ...], event_dims: int) -> torch.Tensor:
    """Stack ``params[k] (J_k, *event)`` into ``(prod J, K, *event)`` over all tuples.

    Row ``t`` (lexicographic, last index fastest) holds ``params[k][t_k]`` for every ``k``.
    """
    grids = []
    for k, param in enumerate(params):
        event = param.shape[1:]
        view = [1] * len(sizes)
        view[k] = sizes[k]
        grids.append(param.reshape(*view, *event).expand(*sizes, *event))
    stacked = torch.stack(torch.broadcast_tensors(*grids), dim=-1 - event_dims)
    return stacked.reshape(-1, *stacked.shape[len(sizes) :])


def _multimarginal_plan(cost: np.ndarray, marginals: list[np.ndarray]) -> np.ndarray:
    """A vertex solution of the multi-marginal transport problem, round-off zeroed.

    ``cost`` has shape ``(J_1, ..., J_K)``; ``marginals[k]`` has ``J_k`` entries and is
    renormalised to sum to 1 so that the constraints are consistent in float64.
    """
    marginals = [m / m.sum() for m in marginals]
    if len(marginals) == 1:
        plan = marginals[0].copy()
    elif len(marginals) == 2:
        import ot  # imported here: POT takes longer to import than torch

        plan, log = ot.emd(marginals[0], marginals[1], cost, log=True)
        if log["result_code"] != 1:
            raise RuntimeError(f"ot.emd failed on the mixing weights: {log['warning']}")
    else:
        plan = _linprog_plan(cost, marginals)
    plan = np.where(plan > _NEGLIGIBLE_MASS, plan, 0.0)
    return plan / plan.sum()


def _linprog_plan(cost: np.ndarray, marginals: list[np.ndarray]) -> np.ndarray:
    """Solve the multi-marginal LP on the flattened tuples with HiGHS' dual simplex.

    One equality row per (mixture ``k``, component ``j``): the mass of the tuples with
    ``t_k = j``. The rows are dependent (each mixture's rows sum to 1); presolve removes
    the redundancy.
    """
    import scipy.optimize  # imported here, as POT above
    import scipy.sparse

    indices = np.indices(cost.shape).reshape(len(cost.shape), -1)
    offsets = np.cumsum([0, *cost.shape[:-1]])
    rows = (indices + offsets[:, None]).ravel()
    columns = np.tile(np.arange(cost.size), len(cost.shape))
    constraints = scipy.sparse.csr_array(
        (np.ones(rows.size), (rows, columns)), shape=(sum(cost.shape), cost.size)
    )
    result = scipy.optimize.linprog(
        cost.ravel(),
        A_eq=constraints,
        b_eq=np.concatenate(marginals),
        bounds=(0, None),
        method="highs-ds",
    )
    if result.status != 0:
        raise RuntimeError(f"HiGHS failed on the mixing weights: {result.message}")
    return result.x.reshape(cost.shape)
