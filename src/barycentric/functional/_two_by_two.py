"""The barycenter fixed point of a few 2 × 2 problems, in Python floats.

For one small problem the cost of the batched solver is the fixed cost of its tensor
operations (a few microseconds each, hundreds per solve), not arithmetic. In two dimensions
every root has a closed form: for a symmetric positive definite
:math:`A = \\begin{pmatrix} a & b \\\\ b & c \\end{pmatrix}` with
:math:`s = \\sqrt{\\det A}` and :math:`t = \\sqrt{\\operatorname{tr} A + 2 s}`,

.. math::

    A^{1/2} = \\frac{A + s I}{t},

so the plain fixed-point iteration
:math:`\\Sigma \\leftarrow \\Sigma^{-1/2} \\big(\\sum_m \\lambda_m (\\Sigma^{1/2} \\Sigma_m
\\Sigma^{1/2})^{1/2}\\big)^2 \\Sigma^{-1/2}` is a few dozen float operations per expert and
step, run here on Python floats (float64). Its residual is the library's,
:math:`\\|\\sum_m \\lambda_m (\\Sigma^{1/2} \\Sigma_m \\Sigma^{1/2})^{1/2} - \\Sigma\\|_F /
\\|\\Sigma\\|_F`; a problem it does not finish in ``max_iter`` steps (the iteration is not
accelerated) is left to the batched solvers. The determinant loses about
:math:`\\varepsilon \\kappa` to cancellation, so as in ``_warm_fixed_point`` a problem is
accepted only where :math:`16 \\varepsilon \\kappa \\le` ``tol`` for the roots it takes; the
others are left to the batched solvers.

Two experts need no iteration: McCann's geodesic (:func:`mccann_two_by_two`) takes the
closed-form roots and the rotation :math:`Q` of the polar decomposition of
:math:`\\Sigma_2^{1/2} \\Sigma_1^{1/2}`, whose determinant is positive, so :math:`Q` is the
rotation by :math:`\\theta = \\operatorname{atan2}(x_{21} - x_{12}, x_{11} + x_{22})`.
"""

from __future__ import annotations

import math

import torch

from barycentric.functional._warm_fixed_point import WarmSolution, condition_limit

__all__ = ["MAX_PROBLEMS", "mccann_two_by_two", "solve_two_by_two"]

#: Batches of at most this many 2 × 2 problems are solved here.
MAX_PROBLEMS = 4

Sym = tuple[float, float, float]


def _entries(covs: torch.Tensor) -> list:
    """``(a, b, c)`` of each symmetric 2 × 2 matrix of ``covs (..., 2, 2)``, as Python floats."""
    return covs.detach().to("cpu", torch.float64)[..., [0, 0, 1], [0, 1, 1]].tolist()


def _matrices(entries: list[Sym], dtype: torch.dtype) -> torch.Tensor:
    """The matrices ``(B, 2, 2)`` of ``dtype`` whose entries are ``(a, b, c)``."""
    flat = torch.tensor([[a, b, b, c] for a, b, c in entries], dtype=torch.float64)
    return flat.reshape(-1, 2, 2).to(dtype)


def _root(m: Sym) -> Sym:
    """:math:`M^{1/2} = (M + sI) / t` (module docstring); ``ValueError`` if indefinite."""
    a, b, c = m
    s = math.sqrt(max(a * c - b * b, 0.0))
    t = math.sqrt(a + c + 2.0 * s)
    return (a + s) / t, b / t, (c + s) / t


def _condition(m: Sym) -> float:
    """Condition number of a symmetric 2 × 2 matrix (inf if singular or not finite)."""
    a, b, c = m
    half_gap = math.hypot(0.5 * (a - c), b)
    centre = 0.5 * (a + c)
    low = centre - half_gap
    return (centre + half_gap) / low if low > 0 else math.inf


def _congruence(r: Sym, m: Sym) -> Sym:
    """:math:`R M R` for symmetric ``r`` and ``m``."""
    r1, r2, r3 = r
    a, b, c = m
    u, v = r1 * a + r2 * b, r1 * b + r2 * c
    w, x = r2 * a + r3 * b, r2 * b + r3 * c
    return u * r1 + v * r2, u * r2 + v * r3, w * r2 + x * r3


def _norm(m: Sym) -> float:
    return math.sqrt(m[0] * m[0] + 2.0 * m[1] * m[1] + m[2] * m[2])


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
    point = _congruence(start, (1.0, 0.0, 1.0))  # R I R = R²
    residual, steps = math.inf, 0
    while steps < max_iter:
        steps += 1
        root = _root(point)
        inner = [_root(_congruence(root, m)) for m in covs]  # (Σ^½ Σ_m Σ^½)^½
        if steps == 1 and max(map(_condition, inner)) > condition_limit(tol):
            return point, math.inf, steps, False
        mean = tuple(sum(w * h[i] for w, h in zip(weights, inner, strict=True)) for i in range(3))
        residual = _norm(tuple(h - p for h, p in zip(mean, point, strict=True))) / _norm(point)
        if not math.isfinite(residual):
            return point, math.inf, steps, False
        if residual <= tol:
            break
        r1, r2, r3 = root
        det = r1 * r3 - r2 * r2
        inverse = (r3 / det, -r2 / det, r1 / det)
        # Σ ← Σ^{-½} H̄² Σ^{-½}
        point = _congruence(inverse, _congruence(mean, (1.0, 0.0, 1.0)))
    # unaccelerated, it can need far more steps than the batched solvers on ill-conditioned
    # problems: one it could not finish is theirs
    return point, residual, steps, residual <= tol


def solve_two_by_two(
    covs: torch.Tensor, weights: torch.Tensor, max_iter: int, tol: float
) -> WarmSolution:
    """The fixed point of each problem of ``covs (B, M, 2, 2)``, ``weights (B, M)``, on the
    CPU in Python floats; fields as :func:`~barycentric.functional._warm_fixed_point.
    solve_warm` returns them."""
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


def _geodesic(first: Sym, second: Sym, t: float) -> Sym:
    """:math:`G G^\\top`, :math:`G = (1 - t) S_1 + t S_2 Q` (module docstring)."""
    s1, s2 = _root(first), _root(second)
    # X = S2 S1, not symmetric
    x11, x12 = s2[0] * s1[0] + s2[1] * s1[1], s2[0] * s1[1] + s2[1] * s1[2]
    x21, x22 = s2[1] * s1[0] + s2[2] * s1[1], s2[1] * s1[1] + s2[2] * s1[2]
    theta = math.atan2(x21 - x12, x11 + x22)
    cos, sin = math.cos(theta), math.sin(theta)
    # S2 Q, Q = [[cos, -sin], [sin, cos]]
    q11, q12 = s2[0] * cos + s2[1] * sin, s2[1] * cos - s2[0] * sin
    q21, q22 = s2[1] * cos + s2[2] * sin, s2[2] * cos - s2[1] * sin
    g11, g12 = (1 - t) * s1[0] + t * q11, (1 - t) * s1[1] + t * q12
    g21, g22 = (1 - t) * s1[1] + t * q21, (1 - t) * s1[2] + t * q22
    return g11 * g11 + g12 * g12, g11 * g21 + g12 * g22, g21 * g21 + g22 * g22


def mccann_two_by_two(covs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """McCann's interpolant of each problem of ``covs (B, 2, 2, 2)``, ``weights (B, 2)``
    (normalised), walked from the expert of larger weight, on the CPU in Python floats.

    Returns
    -------
    Tensor, shape (B, 2, 2)
        In ``covs``' dtype; a lone expert (the other's weight zero) exactly as it is.
    """
    results = []
    for (first, second), (w1, w2) in zip(
        _entries(covs), weights.detach().double().tolist(), strict=True
    ):
        if w2 > w1:
            first, second, w1, w2 = second, first, w2, w1
        results.append(first if w2 == 0 else _geodesic(tuple(first), tuple(second), w2))
    return _matrices(results, covs.dtype)
