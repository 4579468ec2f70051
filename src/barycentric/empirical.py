r"""Wasserstein barycenters of empirical measures and histograms, backed by POT.

Two problems, both solved by the Python Optimal Transport library (POT) through its
torch backend, so that tensors stay on their device and dtype and gradients flow where
POT's operations are differentiable:

* ``method="free_support"``: the atoms of the barycenter of point clouds move, their
  masses stay fixed (Cuturi & Doucet 2014, Algorithm 2 with unit step);
* ``method="sinkhorn"``: the masses of an entropic barycenter of histograms on a fixed
  support change (Benamou et al. 2015).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from barycentric._entry import entry_point, warn_at_caller
from barycentric._validation import (
    all_finite,
    check_finite,
    check_int,
    check_nonnegative,
    check_not_complex,
    check_real,
    check_same_length,
    promote_floating,
    validation_enabled,
)
from barycentric.functional._experts import prepare_weights
from barycentric.linalg import power_of_two_scale

__all__ = ["empirical_barycenter"]

Array = torch.Tensor | np.ndarray

# POT's own defaults, restated so the convergence check below compares against them.
_SOLVER_DEFAULTS = {
    "free_support": {"numItermax": 100, "stopThr": 1e-7},
    "sinkhorn": {"numItermax": 10000, "stopThr": 1e-4},
}


@entry_point
def empirical_barycenter(
    samples: Sequence[Array] | Array,
    weights: Array | Sequence[float] | None = None,
    *,
    support_size: int | None = None,
    init: Array | None = None,
    method: str = "free_support",
    reg: float | torch.Tensor | None = None,
    sample_weights: Sequence[Array] | None = None,
    cost: Array | None = None,
    support: Array | None = None,
    **solver: float,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    r"""Wasserstein barycenter of point clouds or of histograms on a common support.

    Given measures :math:`\nu_1, \dots, \nu_K` and barycentric weights :math:`\lambda`
    on the simplex, the barycenter is

    .. math::

        \mu^\star \in \mathop{\arg\min}_{\mu} \sum_{k=1}^K \lambda_k \, W(\mu, \nu_k),

    where ``method`` chooses the search space for :math:`\mu` and the transport cost
    :math:`W`:

    ``"free_support"``
        :math:`\nu_k = \sum_j a_{kj} \delta_{y_{kj}}` are point clouds in
        :math:`\mathbb{R}^d` and :math:`\mu = \sum_{i=1}^{k} b_i \delta_{x_i}` has fixed
        uniform masses :math:`b_i = 1/k` and free atoms :math:`X = (x_i)`; :math:`W` is
        the squared 2-Wasserstein distance :math:`W_2^2`. The solver alternates exact
        transport plans :math:`T_k` (network simplex) with the barycentric projection
        :math:`X \leftarrow \operatorname{diag}(b)^{-1} \sum_k \lambda_k T_k Y_k`
        (Cuturi & Doucet 2014, Algorithm 2 with unit step; the fixed point of
        Álvarez-Esteban et al. 2016). The problem is not convex in :math:`X`, so the
        result is a local minimiser that depends on ``init``.
    ``"sinkhorn"``
        :math:`\nu_k = a_k` are histograms on one fixed support of :math:`n` points with
        cost matrix :math:`C`, :math:`\mu` is a histogram on it, and :math:`W` is the
        entropic transport cost
        :math:`W_\varepsilon(\mu, \nu) = \min_{P \in \Pi(\mu, \nu)} \langle P, C \rangle
        - \varepsilon H(P)` with :math:`\varepsilon` = ``reg``. The solver is iterative
        Bregman projections (Benamou et al. 2015); it converges to the unregularised
        barycenter as :math:`\varepsilon \to 0`, at the price of more iterations and,
        eventually, underflow of :math:`e^{-C/\varepsilon}`.

    Parameters
    ----------
    samples : sequence of K Tensors of shape (n_k, d), or Tensor of shape (n, K)
        ``"free_support"``: the point clouds :math:`Y_k`; their sizes may differ, their
        dimension may not. ``"sinkhorn"``: the histograms :math:`a_k` as the columns of
        one (n, K) tensor; each column must sum to 1.
    weights : Tensor of shape (K,), optional
        Barycentric weights :math:`\lambda`: non-negative (broadcastable to (K,)),
        normalised to sum to 1. ``None`` means uniform.
    support_size : int, optional
        ``"free_support"`` only: number of atoms :math:`k` of the barycenter. Defaults to
        ``init``'s number of rows if ``init`` is given, else to the largest :math:`n_k`.
    init : Tensor of shape (k, d), optional
        ``"free_support"`` only: initial atoms. Defaults to :math:`k` atoms drawn from
        the mixture :math:`\sum_k \lambda_k \nu_k` (without replacement while there are
        enough atoms) with a :class:`torch.Generator` seeded with 0, so results are
        reproducible and independent of the global random state.
    method : {"free_support", "sinkhorn"}
    reg : float, required for ``"sinkhorn"``
        Entropic regularisation :math:`\varepsilon > 0`, in the units of the cost. Must
        be ``None`` for ``"free_support"``, which is unregularised.
    sample_weights : sequence of K Tensors of shape (n_k,), optional
        ``"free_support"`` only: masses :math:`a_k` of the atoms of each cloud,
        non-negative and summing to 1. ``None`` means uniform masses.
    cost : Tensor of shape (n, n), optional
        ``"sinkhorn"`` only: the cost matrix :math:`C`. Give exactly one of ``cost`` and
        ``support``.
    support : Tensor of shape (n, d), optional
        ``"sinkhorn"`` only: the points of the common support; the cost is then the
        squared Euclidean distance, :math:`C_{ij} = \lVert s_i - s_j \rVert^2`.
    **solver
        Passed to POT: ``numItermax`` (maximum iterations, an integer of at least 1;
        default 100 for ``"free_support"``, 10000 for ``"sinkhorn"``) and ``stopThr``
        (stopping threshold, at least 0; default 1e-7 on the squared displacement of the
        atoms in units of the clouds' spread for ``"free_support"``, 1e-4 on the spread of
        the K marginals for ``"sinkhorn"``). POT's free-support threshold is absolute, so
        the clouds are divided by a power of two :math:`s` near the root-mean-square
        distance of all their points from their mean before POT sees them, and the atoms
        multiplied back (exactly): the result scales with the data.

    Returns
    -------
    support : Tensor of shape (k, d) or (n, d), or None
        ``"free_support"``: the atoms :math:`X`. ``"sinkhorn"``: the ``support`` given,
        or ``None`` when only ``cost`` was given.
    support_weights : Tensor of shape (k,) or (n,)
        ``"free_support"``: the uniform masses :math:`b`. ``"sinkhorn"``: the barycenter
        histogram.

    Raises
    ------
    ValueError
        Naming the offending argument, for: empty ``samples``, mismatched shapes,
        NaN/Inf, complex values, negative masses or weights, ``numItermax`` or
        ``stopThr`` out of range, histograms or masses that do not sum to 1
        (tolerance :math:`\sqrt{\epsilon}` of the dtype), ``reg`` missing or not
        positive for ``"sinkhorn"`` or given for ``"free_support"``, arguments of the
        other method, an unknown ``method``, and a Sinkhorn barycenter that underflowed
        (``reg`` too small for the scale of the cost). The value checks follow
        :mod:`torch.distributions`' validation flag.
    TypeError
        For a ``**solver`` option other than ``numItermax`` and ``stopThr``.

    Warns
    -----
    RuntimeWarning
        If the solver stops at ``numItermax`` before reaching ``stopThr``. No other
        warning reaches the caller: POT's own (its convergence message, and torch's
        deprecation of ``.T`` on 1-D tensors inside POT's Sinkhorn barycenter) are
        replaced or silenced.

    Notes
    -----
    All inputs may be tensors or numpy arrays; they are converted to the dtype and
    device of ``samples`` (of its first cloud for ``"free_support"``; integer samples
    become the default float dtype), and the outputs are tensors with that dtype and
    device. Float16 and bfloat16 clouds are computed in float32 (POT's network simplex
    takes no other) and returned in their dtype.

    Scale. Every result is equivariant under scaling the data, in every dtype, for data
    the dtype holds: ``"free_support"`` atoms scale with the clouds (see ``stopThr``
    above), and the ``"sinkhorn"`` histogram is the same for ``support`` scaled by
    :math:`c` (or ``cost`` by :math:`c^2`) and ``reg`` by :math:`c^2`. The support is
    centred and divided by powers of two before its squared distances are formed, and
    the cost and ``reg`` reach POT divided by one power of two near the larger of the
    two, ``reg`` divided in float64: so a ``reg`` given as a Python float below the
    range of float32 (``support`` near :math:`10^{-25}`, say) keeps all its digits.

    Gradients. ``"sinkhorn"`` differentiates through the unrolled iterations, so
    gradients reach ``samples``, ``weights``, ``cost`` or ``support``, and ``reg`` if it
    is a tensor. ``"free_support"`` treats the transport plans as constants (they are
    piecewise constant in the atoms), so gradients reach the points of ``samples`` and
    ``weights`` through the last projection step, and not ``sample_weights`` or
    ``init``.

    References
    ----------
    - M. Cuturi and A. Doucet, "Fast computation of Wasserstein barycenters",
      ICML 2014.
    - J.-D. Benamou, G. Carlier, M. Cuturi, L. Nenna and G. Peyré, "Iterative
      Bregman projections for regularized transportation problems", SIAM J. Sci.
      Comput. 37(2), A1111–A1138, 2015.
    - P. C. Álvarez-Esteban, E. del Barrio, J. A. Cuesta-Albertos and C. Matrán,
      "A fixed-point approach to barycenters in Wasserstein space", J. Math. Anal.
      Appl. 441(2), 744–762, 2016.

    Examples
    --------
    The barycenter of two clouds on a line averages their quantiles:

    >>> import torch
    >>> from barycentric.empirical import empirical_barycenter
    >>> clouds = [torch.tensor([[0.0], [2.0]]), torch.tensor([[4.0], [6.0]])]
    >>> atoms, masses = empirical_barycenter(clouds)
    >>> atoms.flatten().sort().values
    tensor([2., 4.])
    >>> masses
    tensor([0.5000, 0.5000])

    The entropic barycenter of two Diracs at the ends of a grid sits in its middle:

    >>> grid = torch.linspace(0.0, 1.0, 5, dtype=torch.float64).unsqueeze(1)
    >>> diracs = torch.eye(5, dtype=torch.float64)[:, [0, 4]]
    >>> _, histogram = empirical_barycenter(diracs, method="sinkhorn", support=grid, reg=0.02)
    >>> histogram.argmax().item()
    2
    """
    unknown = sorted(set(solver) - set(_SOLVER_DEFAULTS["free_support"]))
    if unknown:
        raise TypeError(f"unknown solver options {unknown}; accepted: numItermax, stopThr")
    if method == "free_support":
        _reject_unused(method, reg=reg, cost=cost, support=support)
        options = _solver_options(method, solver)
        return _free_support(samples, weights, sample_weights, support_size, init, options)
    if method == "sinkhorn":
        _reject_unused(method, support_size=support_size, init=init, sample_weights=sample_weights)
        options = _solver_options(method, solver)
        return _sinkhorn(samples, weights, reg, cost, support, options)
    raise ValueError(f"`method` must be 'free_support' or 'sinkhorn', got {method!r}")


def _solver_options(method: str, solver: dict[str, float]) -> dict[str, float]:
    """POT's options for ``method``, defaults filled in; ``ValueError`` unless
    ``numItermax`` is an integer of at least 1 and ``stopThr`` a number of at least 0."""
    options = {**_SOLVER_DEFAULTS[method], **solver}
    return {
        "numItermax": check_int(options["numItermax"], "numItermax", minimum=1),
        "stopThr": check_real(options["stopThr"], "stopThr", minimum=0.0),
    }


def _free_support(
    samples: Sequence[Array] | Array,
    weights: Array | Sequence[float] | None,
    sample_weights: Sequence[Array] | None,
    support_size: int | None,
    init: Array | None,
    options: dict[str, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    if len(samples) == 0:
        raise ValueError("`samples` must hold at least one point cloud")
    first = _floating(samples[0], "samples[0]")
    # POT's network simplex runs in float32 or float64 only; half precision computes in float32
    work = torch.promote_types(first.dtype, torch.float32)
    clouds = [_like(cloud, first, f"samples[{i}]").to(work) for i, cloud in enumerate(samples)]
    for i, cloud in enumerate(clouds):
        if cloud.ndim != 2 or cloud.shape[0] == 0:
            raise ValueError(
                f"`samples[{i}]` must be a non-empty (n, d) point cloud, got shape "
                f"{tuple(cloud.shape)}"
            )
        if cloud.shape[1] != clouds[0].shape[1]:
            raise ValueError(
                f"`samples[{i}]` has points of dimension {cloud.shape[1]}, but `samples[0]` "
                f"has dimension {clouds[0].shape[1]}"
            )
        check_finite(cloud, f"samples[{i}]")
    masses = _cloud_masses(sample_weights, clouds)
    lam = _barycentric_weights(weights, len(clouds), clouds[0])
    if support_size is not None:
        support_size = check_int(support_size, "support_size", minimum=1)
    if init is None:
        k = max(cloud.shape[0] for cloud in clouds) if support_size is None else support_size
        init = _draw_from_mixture(clouds, masses, lam, k)
    else:
        init = _like(init, first, "init").to(work)
        dim = clouds[0].shape[1]
        if init.ndim != 2 or init.shape[0] == 0 or init.shape[1] != dim:
            raise ValueError(f"`init` must have shape (k, {dim}), got {tuple(init.shape)}")
        if support_size is not None and support_size != init.shape[0]:
            raise ValueError(
                f"`support_size` ({support_size}) differs from the rows of `init` ({init.shape[0]})"
            )
        check_finite(init, "init")
    k = init.shape[0]
    # POT stops on an absolute displacement: solved at the data's scale, divided out exactly
    # (powers of two), the atoms scale with the data and `stopThr` is relative to it
    magnitude, spread = _spread_scale(clouds)
    b = torch.full((k,), 1.0 / k, dtype=work, device=first.device)
    import ot  # imported here: POT takes longer to import than torch

    atoms, log = ot.lp.free_support_barycenter(
        [cloud / magnitude / spread for cloud in clouds],
        masses,
        init / magnitude / spread,
        b=b,
        weights=lam,
        log=True,
        **options,
    )
    displacements = log["displacement_square_norms"]
    if displacements and displacements[-1].item() > options["stopThr"]:
        warn_at_caller(
            f"the free-support barycenter did not converge in numItermax={options['numItermax']} "
            f"iterations (squared displacement {displacements[-1].item():.3g} in units of the "
            f"data's spread > stopThr={options['stopThr']:.3g})",
        )
    return (atoms * spread * magnitude).to(first.dtype), b.to(first.dtype)


def _spread_scale(clouds: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two powers of two (detached) whose product is near the root-mean-square distance of
    all the clouds' points from their mean: ``magnitude`` near the largest coordinate, and
    ``spread`` near that distance in units of ``magnitude`` (1/2 when every point is the
    same). The distance is measured in units of ``magnitude``, where its squares neither
    underflow nor overflow, and the two are kept apart because their product may not be
    representable near the dtype's largest number."""
    points = torch.cat(clouds).detach()
    magnitude = power_of_two_scale(points.abs().amax())
    points = points / magnitude
    spread = (points - points.mean(0)).square().sum(-1).mean().sqrt()
    return magnitude, power_of_two_scale(spread)


def _sinkhorn(
    samples: Array,
    weights: Array | Sequence[float] | None,
    reg: float | torch.Tensor | None,
    cost: Array | None,
    support: Array | None,
    options: dict[str, float],
) -> tuple[torch.Tensor | None, torch.Tensor]:
    histograms = _floating(samples, "samples")
    if histograms.ndim != 2 or 0 in histograms.shape:
        raise ValueError(
            "`samples` must be a non-empty (n, K) tensor of K histograms as columns for "
            f"method='sinkhorn', got shape {tuple(histograms.shape)}"
        )
    n, count = histograms.shape
    check_nonnegative(histograms, "samples")
    _check_sums_to_one(histograms, "samples")
    lam = _barycentric_weights(weights, count, histograms)
    reg_value = math.nan if reg is None else check_real(reg, "reg", minimum=-math.inf)
    if not 0 < reg_value < math.inf:
        raise ValueError(f"`reg` must be a finite positive number for method='sinkhorn', got {reg}")
    check_not_complex(reg, "reg")
    if (cost is None) == (support is None):
        raise ValueError(
            "method='sinkhorn' needs exactly one of `cost` (n, n) and `support` (n, d)"
        )
    import ot  # imported here: POT takes longer to import than torch

    if cost is not None:
        cost = _like(cost, histograms, "cost")
        if cost.shape != (n, n):
            raise ValueError(f"`cost` must have shape ({n}, {n}), got {tuple(cost.shape)}")
        check_finite(cost, "cost")
        units = []
    else:
        support = _like(support, histograms, "support")
        if support.ndim != 2 or support.shape[0] != n:
            raise ValueError(f"`support` must have shape ({n}, d), got {tuple(support.shape)}")
        check_finite(support, "support")
        # the squared distances are formed from centred points of magnitude near 1: POT's
        # ‖x‖² + ‖y‖² − 2⟨x, y⟩ neither overflows nor cancels the points' common offset
        magnitude = power_of_two_scale(support.detach().abs().amax())
        points = support / magnitude
        points = points - points.mean(0)
        length = power_of_two_scale(points.detach().abs().amax())
        points = points / length
        cost = ot.dist(points, points)
        units = [magnitude, magnitude, length, length]
    cost, reg, ratio = _kernel_arguments(cost, reg, units)
    with warnings.catch_warnings():
        # POT transposes the 1-D weights with `.T`, which torch deprecates: POT's to fix,
        # nothing the caller can act on.
        warnings.filterwarnings(
            "ignore",
            message=r"The use of `x\.T` on tensors of dimension other than 2",
            category=UserWarning,
            module=r"ot\.",
        )
        barycenter, log = ot.bregman.barycenter(
            histograms, cost, reg, weights=lam, method="sinkhorn", log=True, warn=False, **options
        )
    if validation_enabled() and not bool(all_finite(barycenter)):
        raise ValueError(
            f"the Sinkhorn barycenter is not finite: `reg`={reg_value:.3g} is too small for "
            f"the scale of the cost (its largest entry is {ratio:.3g} times `reg`), so "
            f"exp(-cost / reg) underflows in {histograms.dtype}; increase `reg`"
        )
    # POT measures the spread every 10 iterations and stops as soon as it is below stopThr.
    spread = log["err"][-1].item() if log["err"] else math.inf
    if spread >= options["stopThr"]:
        last = f"{spread:.3g}" if log["err"] else "not yet measured"
        warn_at_caller(
            f"the Sinkhorn barycenter did not converge in numItermax={options['numItermax']} "
            f"iterations (spread of the marginals {last}, stopThr={options['stopThr']:.3g}); "
            "increase numItermax or `reg`",
        )
    return support, barycenter


def _kernel_arguments(
    cost: torch.Tensor, reg: float | torch.Tensor, units: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, float]:
    r"""The cost and ``reg`` in a common unit, a power of two near the larger of the two, and
    the ratio of the largest cost to ``reg``.

    POT's kernel :math:`e^{-C/\varepsilon}` depends on :math:`C / \varepsilon` only, so
    dividing both by one power of two changes no digit of it, and in that unit neither
    underflows nor overflows for any cost and ``reg`` the dtype holds. ``cost`` is given in
    units of the product of the powers of two ``units`` (those of a normalised support);
    ``reg`` is divided by them and by the common unit in float64 on the host, where no
    quotient on the way underflows or overflows, then put in the cost's dtype and device.
    """
    if isinstance(reg, torch.Tensor):
        value = reg.to("cpu", torch.float64)
    else:
        value = torch.tensor(float(reg), dtype=torch.float64)
    for unit in units:
        value = value / float(unit)
    largest, reg_value = float(cost.detach().abs().amax()), float(value.detach())
    if largest == 0:  # one point: the kernel is 1 whatever reg, which may be out of range
        return cost, (value / reg_value).to(cost.device, cost.dtype), 0.0
    common = power_of_two_scale(torch.tensor(max(largest, reg_value), dtype=torch.float64))
    # held within the cost's dtype: a reg beyond its range makes no digit of C / reg differ
    info = torch.finfo(cost.dtype)
    common = common.clamp(info.tiny, float(power_of_two_scale(torch.tensor(info.max))))
    value = value / common
    ratio = largest / reg_value
    return cost / common.to(cost.device, cost.dtype), value.to(cost.device, cost.dtype), ratio


def _floating(x: Array, name: str) -> torch.Tensor:
    """``x`` as a real floating tensor, integer data promoted to the default float dtype."""
    try:
        tensor = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"`{name}` must be a tensor or an array of numbers: {error}") from error
    return promote_floating((name, tensor))[0]


def _like(x: Array | Sequence[float], like: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` in ``like``'s dtype and device; ``ValueError`` naming ``name`` if it is complex."""
    check_not_complex(x, name)
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


def _reject_unused(method: str, **arguments: object) -> None:
    for name, value in arguments.items():
        if value is not None:
            raise ValueError(f"`{name}` is not used by method={method!r}; leave it None")


def _check_sums_to_one(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` unless the columns (dim 0) of ``x`` sum to 1 within √eps."""
    if not validation_enabled():
        return
    tolerance = math.sqrt(torch.finfo(x.dtype).eps)
    error = float((x.detach().sum(0) - 1).abs().max())
    if error > tolerance:
        raise ValueError(
            f"`{name}` must sum to 1, but is off by {error:.3g} (tolerance {tolerance:.1g})"
        )


def _barycentric_weights(
    weights: Array | Sequence[float] | None, count: int, like: torch.Tensor
) -> torch.Tensor:
    """The weights λ as a (count,) tensor on the simplex; ``None`` means uniform."""
    return prepare_weights(weights, (count,), like)


def _cloud_masses(
    sample_weights: Sequence[Array] | None, clouds: list[torch.Tensor]
) -> list[torch.Tensor]:
    """The atom masses of every cloud, validated and exactly normalised."""
    if sample_weights is None:
        return [torch.full((len(c),), 1.0 / len(c), dtype=c.dtype, device=c.device) for c in clouds]
    check_same_length(sample_weights, len(clouds), "sample_weights")
    masses = []
    for i, (mass, cloud) in enumerate(zip(sample_weights, clouds, strict=True)):
        mass = _like(mass, cloud, f"sample_weights[{i}]")
        if mass.shape != cloud.shape[:1]:
            raise ValueError(
                f"`sample_weights[{i}]` must have shape ({len(cloud)},) like the points of "
                f"`samples[{i}]`, got {tuple(mass.shape)}"
            )
        check_nonnegative(mass, f"sample_weights[{i}]")
        _check_sums_to_one(mass, f"sample_weights[{i}]")
        # POT's network simplex asserts equal total masses to 1e-6, tighter than the
        # float32 tolerance above; renormalising makes every sum 1 to rounding.
        masses.append(mass / mass.sum())
    return masses


def _draw_from_mixture(
    clouds: list[torch.Tensor], masses: list[torch.Tensor], lam: torch.Tensor, k: int
) -> torch.Tensor:
    """``k`` atoms drawn from the mixture Σ λ_k ν_k, reproducibly (seed 0)."""
    probabilities = torch.cat([w * m for w, m in zip(lam, masses, strict=True)])
    probabilities = probabilities.detach().to("cpu", torch.float64)
    available = int((probabilities > 0).sum())
    generator = torch.Generator().manual_seed(0)
    index = torch.multinomial(probabilities, k, replacement=k > available, generator=generator)
    return torch.cat(clouds).detach()[index.to(clouds[0].device)]
