"""The barycenter fixed point of 2 × 2 problems from closed-form roots.

For small matrices the cost of the general solver is the fixed cost of its tensor operations
(a few microseconds each, hundreds per solve: decompositions, Newton steps, bookkeeping),
not arithmetic. In two dimensions every root has a closed form: for a symmetric positive
definite
:math:`A = \\begin{pmatrix} a & b \\\\ b & c \\end{pmatrix}` with eigenvalues
:math:`\\lambda_1 \\le \\lambda_2`, :math:`s = \\sqrt{\\det A} = \\sqrt{\\lambda_1}
\\sqrt{\\lambda_2}` and :math:`t = \\sqrt{\\operatorname{tr} A + 2 s} = \\sqrt{\\lambda_1} +
\\sqrt{\\lambda_2}` (taken from the eigenvalues, so that no product of two entries can
overflow or underflow),

.. math::

    A^{1/2} = \\frac{A + s I}{t},

so the fixed-point step
:math:`\\Sigma \\leftarrow \\Sigma^{-1/2} \\big(\\sum_m \\lambda_m (\\Sigma^{1/2} \\Sigma_m
\\Sigma^{1/2})^{1/2}\\big)^2 \\Sigma^{-1/2}` is a few dozen operations on the entries
:math:`(a, b, c)` per expert. They are written once, for entries that are Python floats or
tensors:

* a few problems on the CPU (:data:`MAX_PROBLEMS`) are solved one by one in Python floats
  (float64), where an operation costs nanoseconds; a problem this plain iteration does not
  finish in ``max_iter`` steps is left to the robust solver;
* every other batch of 2 × 2 problems is solved at once on tensors of entries, in float64
  and with the Anderson mixing of the general solver (``_anderson``), problems leaving as
  they converge.

The residual is the library's, :math:`\\|\\sum_m \\lambda_m (\\Sigma^{1/2} \\Sigma_m
\\Sigma^{1/2})^{1/2} - \\Sigma\\|_F / \\|\\Sigma\\|_F`. The smaller eigenvalue loses about
:math:`\\varepsilon \\kappa` to cancellation, so as in ``_warm_fixed_point`` a problem is
accepted only where :math:`16 \\varepsilon \\kappa \\le` ``tol`` for the roots of its first
step; the others, and those whose steps are not finite, are left to the robust solver.

Two experts need no iteration: McCann's geodesic (:func:`mccann_two_by_two`) takes the
closed-form roots and the rotation :math:`Q` of the polar decomposition of
:math:`\\Sigma_2^{1/2} \\Sigma_1^{1/2}`, whose determinant is positive, so :math:`Q` is the
rotation by :math:`\\theta = \\operatorname{atan2}(x_{21} - x_{12}, x_{11} + x_{22})`; like
the fixed point, a few problems on the CPU in Python floats, any other batch on tensors of
entries in float64. Its roots are certified by the same rule, for both experts; a problem
they fail (an expert too ill-conditioned, singular, indefinite, or one that underflowed to
zero when the problem was normalised) comes back NaN, and ``gaussian_wasserstein`` solves
it by the geodesic of any dimension.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch

from barycentric.functional._anderson import Anderson
from barycentric.functional._warm_fixed_point import (
    Outcomes,
    WarmSolution,
    condition_limit,
    nothing_accepted,
)

__all__ = ["MAX_PROBLEMS", "mccann_two_by_two", "solve_two_by_two"]

#: Batches of at most this many 2 × 2 problems on the CPU are solved in Python floats.
MAX_PROBLEMS = 4

#: Products of two entries in Python floats (float64) that neither underflow nor overflow.
_SAFE_PRODUCTS = (1e-290, 1e290)
_SQRT2 = math.sqrt(2.0)

#: An entry: a Python float, or a tensor of one entry over problems (and experts).
Entry = TypeVar("Entry", float, torch.Tensor)
Sym = tuple[float, float, float]


def _in_python_floats(covs: torch.Tensor) -> bool:
    """Whether the problems of ``covs (B, ...)`` are few enough, and on the CPU, to be solved
    one by one in Python floats (:data:`MAX_PROBLEMS`)."""
    return covs.device.type == "cpu" and covs.shape[0] <= MAX_PROBLEMS


def _entries(covs: torch.Tensor) -> list:
    """``(a, b, c)`` of each symmetric 2 × 2 matrix of ``covs (..., 2, 2)``, as Python floats."""
    return covs.detach().to("cpu", torch.float64)[..., [0, 0, 1], [0, 1, 1]].tolist()


def _matrices(entries: list[Sym], dtype: torch.dtype) -> torch.Tensor:
    """The matrices ``(B, 2, 2)`` of ``dtype`` whose entries are ``(a, b, c)``."""
    flat = torch.tensor([[a, b, b, c] for a, b, c in entries], dtype=torch.float64)
    return flat.reshape(-1, 2, 2).to(dtype)


def _spectrum(m: tuple[Entry, Entry, Entry]) -> tuple[Entry, Entry]:
    """The eigenvalues ``(low, high)`` of the symmetric matrix of entries ``(a, b, c)``:
    :math:`(a + c) / 2 \\mp \\operatorname{hypot}((a - c) / 2, b)`, which overflow and
    underflow only near the ends of the range (the determinant :math:`a c - b^2` does from
    its square root on: 1e154 in float64)."""
    a, b, c = m
    centre = 0.5 * (a + c)
    half_gap = (torch.hypot if isinstance(b, torch.Tensor) else math.hypot)(0.5 * (a - c), b)
    return centre - half_gap, centre + half_gap


def _root(
    m: tuple[Entry, Entry, Entry], spectrum: tuple[Entry, Entry] | None = None
) -> tuple[Entry, Entry, Entry]:
    """:math:`M^{1/2} = (M + sI) / t` (module docstring), with :math:`s = \\sqrt{\\lambda_1}
    \\sqrt{\\lambda_2}` and :math:`t = \\sqrt{\\lambda_1} + \\sqrt{\\lambda_2}` from the
    eigenvalues (``spectrum``, else :func:`_spectrum`), so at any scale the dtype holds; for
    Python floats ``ValueError`` if indefinite and ``ZeroDivisionError`` if zero, for
    tensors NaN."""
    a, b, c = m
    if spectrum is None and not isinstance(a, torch.Tensor):
        # in Python floats, s from the determinant while a c is well inside the range: the
        # eigenvalues' call made one (M = 5) problem's iteration 270 → 295 µs
        ac = a * c
        if _SAFE_PRODUCTS[0] < ac < _SAFE_PRODUCTS[1] and ac >= b * b:
            s = math.sqrt(ac - b * b)
            t = math.sqrt(a + c + 2.0 * s)
            return (a + s) / t, b / t, (c + s) / t
    low, high = _spectrum(m) if spectrum is None else spectrum
    if isinstance(a, torch.Tensor):
        root_low, root_high = low.sqrt(), high.sqrt()
    else:
        root_low, root_high = math.sqrt(low), math.sqrt(high)
    s, t = root_low * root_high, root_low + root_high
    return (a + s) / t, b / t, (c + s) / t


def _conditioned(spectrum: tuple[Entry, Entry], limit: float) -> bool | torch.Tensor:
    """Whether the eigenvalues ``spectrum`` are positive with a ratio of at most ``limit``
    (not where they are zero or not finite)."""
    low, high = spectrum
    return (high <= limit * low) & (low > 0)


def _certified(m: tuple[Entry, Entry, Entry], limit: float) -> bool | torch.Tensor:
    """Whether symmetric ``m`` is positive definite with condition number at most ``limit``
    (not where it is singular or not finite)."""
    return _conditioned(_spectrum(m), limit)


def _congruence(
    r: tuple[Entry, Entry, Entry], m: tuple[Entry, Entry, Entry]
) -> tuple[Entry, Entry, Entry]:
    """:math:`R M R` for symmetric ``r`` and ``m``."""
    r1, r2, r3 = r
    a, b, c = m
    u, v = r1 * a + r2 * b, r1 * b + r2 * c
    w, x = r2 * a + r3 * b, r2 * b + r3 * c
    return u * r1 + v * r2, u * r2 + v * r3, w * r2 + x * r3


def _square(m: tuple[Entry, Entry, Entry]) -> tuple[Entry, Entry, Entry]:
    """:math:`M^2` for symmetric ``m``."""
    a, b, c = m
    return a * a + b * b, b * (a + c), b * b + c * c


def _inverse(m: tuple[Entry, Entry, Entry]) -> tuple[Entry, Entry, Entry]:
    a, b, c = m
    det = a * c - b * b
    return c / det, -b / det, a / det


def _norm(m: tuple[Entry, Entry, Entry]) -> Entry:
    """The Frobenius norm :math:`\\sqrt{a^2 + 2 b^2 + c^2}`, by ``hypot``: the squares of
    entries at the answer's scale can underflow (a huge expert of tiny weight sets the
    normalisation far above that scale)."""
    a, b, c = m
    if isinstance(a, torch.Tensor):
        return torch.hypot(torch.hypot(a, c), _SQRT2 * b)
    return math.hypot(a, _SQRT2 * b, c)


def _solve_one(
    covs: list[Sym], weights: list[float], max_iter: int, tol: float
) -> tuple[Sym, float, int, bool]:
    """``(Σ, residual, steps, accepted)`` for one problem."""
    try:
        return _iterate(covs, weights, max_iter, tol)
    except (ValueError, ZeroDivisionError):  # a root or inverse of an indefinite matrix
        return covs[0], math.inf, 0, False


def _iterate(
    covs: list[Sym], weights: list[float], max_iter: int, tol: float
) -> tuple[Sym, float, int, bool]:
    roots = [_root(m) for m in covs]
    if not all(math.isfinite(x) for m in roots for x in m):
        return covs[0], math.inf, 0, False
    start = tuple(sum(w * r[i] for w, r in zip(weights, roots, strict=True)) for i in range(3))
    point = _square(start)
    residual, steps, limit = math.inf, 0, condition_limit(tol)
    while steps < max_iter:
        steps += 1
        root = _root(point)
        inner = [_root(_congruence(root, m)) for m in covs]  # (Σ^½ Σ_m Σ^½)^½
        if steps == 1 and not all(_certified(h, limit) for h in inner):
            return point, math.inf, steps, False
        mean = tuple(sum(w * h[i] for w, h in zip(weights, inner, strict=True)) for i in range(3))
        residual = _norm(tuple(h - p for h, p in zip(mean, point, strict=True))) / _norm(point)
        if not math.isfinite(residual):
            return point, math.inf, steps, False
        if residual <= tol:
            break
        # Σ ← Σ^{-½} H̄² Σ^{-½}
        point = _congruence(_inverse(root), _square(mean))
    # unaccelerated, it can need far more steps than the batched solvers on ill-conditioned
    # problems: one it could not finish is theirs
    return point, residual, steps, residual <= tol


def solve_two_by_two(
    covs: torch.Tensor, weights: torch.Tensor, max_iter: int, tol: float
) -> WarmSolution:
    """The fixed point of each problem of ``covs (B, M, 2, 2)``, ``weights (B, M)``: in
    Python floats for a few problems on the CPU, else batched (module docstring); fields as
    :func:`~barycentric.functional._warm_fixed_point.solve_warm` returns them."""
    if _in_python_floats(covs):
        return _solve_floats(covs, weights, max_iter, tol)
    return _solve_batched(covs, weights, max_iter, tol)


def _solve_floats(
    covs: torch.Tensor, weights: torch.Tensor, max_iter: int, tol: float
) -> WarmSolution:
    results = [
        _solve_one([tuple(m) for m in problem], w, max_iter, tol)
        for problem, w in zip(_entries(covs), weights.detach().double().tolist(), strict=True)
    ]
    solution = _matrices([point for point, *_ in results], covs.dtype)
    residual = torch.tensor([r for _, r, _, _ in results], dtype=covs.dtype)
    accepted = torch.tensor([a for *_, a in results], dtype=torch.bool)
    return WarmSolution(
        solution,
        residual,
        (residual <= tol) & accepted,
        max((s for _, _, s, _ in results), default=0),
        accepted,
    )


def _solve_batched(
    covs: torch.Tensor, weights: torch.Tensor, max_iter: int, tol: float
) -> WarmSolution:
    limit = condition_limit(tol)
    if limit < 1:  # no condition number qualifies (tol = 0 forces every step)
        return nothing_accepted(covs)
    work, weights = covs.to(torch.float64), weights.to(torch.float64)
    experts = (work[..., 0, 0], work[..., 0, 1], work[..., 1, 1])  # (B, M) each
    start = _weighted(weights, _root(experts))
    point = torch.stack(_square(start), -1)  # (B, 3)
    active = torch.arange(covs.shape[0], device=covs.device)
    outcomes = Outcomes(point, torch.ones_like(active, dtype=torch.bool))
    accelerate = Anderson()
    iterations = 0
    while active.numel() > 0 and iterations < max_iter:
        iterations += 1
        current = point.unbind(-1)
        root = _root(current)
        inner = _root(_congruence(tuple(x[:, None] for x in root), experts))
        mean = _weighted(weights, inner)
        step_residual = _norm(tuple(h - p for h, p in zip(mean, current, strict=True)))
        step_residual = step_residual / _norm(current)
        easy = torch.isfinite(step_residual)
        if iterations == 1:
            easy = easy & _certified(inner, limit).all(-1)
        done = step_residual <= tol
        keep = outcomes.record(active, point, step_residual, done, easy, iterations == max_iter)
        if not bool(keep.any()):
            break
        # Σ ← Σ^{-½} H̄² Σ^{-½}
        image = torch.stack(_congruence(_inverse(root), _square(mean)), -1)
        everyone = bool(keep.all())
        if not everyone:
            active, image = active[keep], image[keep]
            experts, weights = tuple(x[keep] for x in experts), weights[keep]
        mixed = accelerate(point[keep], image, None if everyone else keep)
        positive = _certified(mixed.unbind(-1), math.inf)
        point = torch.where(positive[:, None], mixed, image)
    found = outcomes.finish(iterations, covs.dtype)
    return found._replace(solution=found.solution[:, [0, 1, 1, 2]].view(-1, 2, 2))  # (a, b, b, c)


def _weighted(weights: torch.Tensor, m: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """:math:`\\sum_m \\lambda_m M_m` of entries ``(B, M)`` with ``weights (B, M)``."""
    return tuple((weights * x).sum(-1) for x in m)


def _geodesic(
    s1: tuple[Entry, Entry, Entry], s2: tuple[Entry, Entry, Entry], t: Entry
) -> tuple[Entry, Entry, Entry]:
    """:math:`G G^\\top`, :math:`G = (1 - t) S_1 + t S_2 Q` (module docstring), from the roots
    ``s1`` and ``s2`` of the experts."""
    # X = S2 S1, not symmetric; Q rotates by atan2(x21 - x12, x11 + x22) (the identity where
    # X = 0: singular experts with orthogonal ranges, which validation lets through if off)
    x11, x12 = s2[0] * s1[0] + s2[1] * s1[1], s2[0] * s1[1] + s2[1] * s1[2]
    x21, x22 = s2[1] * s1[0] + s2[2] * s1[1], s2[1] * s1[1] + s2[2] * s1[2]
    if isinstance(x11, torch.Tensor):
        theta = torch.atan2(x21 - x12, x11 + x22)
        cos, sin = theta.cos(), theta.sin()
    else:
        theta = math.atan2(x21 - x12, x11 + x22)
        cos, sin = math.cos(theta), math.sin(theta)
    # S2 Q, Q = [[cos, -sin], [sin, cos]]
    q11, q12 = s2[0] * cos + s2[1] * sin, s2[1] * cos - s2[0] * sin
    q21, q22 = s2[1] * cos + s2[2] * sin, s2[2] * cos - s2[1] * sin
    g11, g12 = (1 - t) * s1[0] + t * q11, (1 - t) * s1[1] + t * q12
    g21, g22 = (1 - t) * s1[1] + t * q21, (1 - t) * s1[2] + t * q22
    return g11 * g11 + g12 * g12, g11 * g21 + g12 * g22, g21 * g21 + g22 * g22


def mccann_two_by_two(
    covs: torch.Tensor, weights: torch.Tensor, tol: float | None = None
) -> torch.Tensor:
    """McCann's interpolant of each problem of ``covs (B, 2, 2, 2)``, ``weights (B, 2)``
    (normalised), walked from the expert of larger weight: in Python floats for a few
    problems on the CPU, else on tensors of entries in float64.

    Parameters
    ----------
    covs : Tensor, shape (B, 2, 2, 2)
    weights : Tensor, shape (B, 2)
    tol : float, optional
        Where given, a problem is computed only where the closed-form roots of both
        experts are certified to ``tol`` by the rule of the fixed point, :math:`16
        \\varepsilon \\kappa(\\Sigma_m^{1/2}) \\le` ``tol``: the cancellation in the smaller
        eigenvalue of :math:`\\Sigma_m` costs its root about :math:`\\varepsilon
        \\kappa(\\Sigma_m^{1/2})` of its norm, and the geodesic inherits that error. The
        others (too ill-conditioned, singular, indefinite or not finite experts) come back
        NaN in every entry, for the caller to solve otherwise.

    Returns
    -------
    Tensor, shape (B, 2, 2)
        In ``covs``' dtype; a lone expert (the other's weight zero) exactly as it is.
    """
    limit = None
    if tol is not None:  # κ(Σ) ≤ limit² is κ(Σ^½) ≤ limit (a product overflows to inf)
        limit = condition_limit(tol)
        limit *= limit
    if _in_python_floats(covs):
        return _mccann_floats(covs, weights, limit)
    work, weights = covs.to(torch.float64), weights.to(torch.float64)
    # the heavier expert first; both experts' entries and roots at once, (B, 2) each
    swap = weights[:, 1] > weights[:, 0]
    work = torch.where(swap[:, None, None, None], work.flip(1), work)
    t = torch.where(swap, weights[:, 0], weights[:, 1])
    entries = (work[..., 0, 0], work[..., 0, 1], work[..., 1, 1])
    spectrum = _spectrum(entries)
    roots = _root(entries, spectrum)
    walked = _geodesic(tuple(x[:, 0] for x in roots), tuple(x[:, 1] for x in roots), t)
    walked = torch.stack(walked, -1)[:, [0, 1, 1, 2]].view(-1, 2, 2)
    if limit is not None:
        certified = _conditioned(spectrum, limit).all(-1)
        walked = torch.where(certified[:, None, None], walked, torch.nan)
    return torch.where((t == 0)[:, None, None], work[:, 0], walked).to(covs.dtype)


def _mccann_floats(covs: torch.Tensor, weights: torch.Tensor, limit: float | None) -> torch.Tensor:
    """:func:`mccann_two_by_two` in Python floats; ``limit`` bounds the experts' condition
    numbers (``None``: no bound)."""
    unsolved = (math.nan,) * 3
    results = []
    for (first, second), (w1, w2) in zip(
        _entries(covs), weights.detach().double().tolist(), strict=True
    ):
        if w2 > w1:
            first, second, w1, w2 = second, first, w2, w1
        if w2 == 0:
            results.append(first)
            continue
        spectra = _spectrum(first), _spectrum(second)
        if limit is not None and not all(_conditioned(x, limit) for x in spectra):
            results.append(unsolved)
            continue
        try:
            roots = (_root(first, spectra[0]), _root(second, spectra[1]))
            results.append(_geodesic(*roots, w2))
        except (ValueError, ZeroDivisionError):  # an indefinite or zero expert
            results.append(unsolved)
    return _matrices(results, covs.dtype)
