"""Anderson mixing (``functional._anderson``) on linear fixed points, where it is exact."""

from __future__ import annotations

import torch

from barycentric.functional._anderson import Anderson

F64 = torch.float64


def _linear_problems(seed: int, batch: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``G(x) = A x + b`` with ``‖A‖ = 0.9`` and its fixed point ``(I - A)⁻¹ b``."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, n, generator=generator, dtype=F64)
    a = 0.9 * a / torch.linalg.matrix_norm(a, ord=2)[:, None, None]
    b = torch.randn(batch, n, 1, generator=generator, dtype=F64)
    return a, b


def test_a_linear_map_is_solved_after_its_dimension_plus_one_steps() -> None:
    # type II Anderson with n differences spans the Krylov space of a linear map in n
    # dimensions: the (n + 2)-th proposal is its fixed point (GMRES equivalence)
    n = 3
    a, b = _linear_problems(0, 5, n)
    exact = torch.linalg.solve(torch.eye(n, dtype=F64) - a, b)
    accelerate = Anderson(memory=n)
    point = torch.zeros_like(b)
    for _ in range(n + 2):
        point = accelerate(point, a @ point + b)
    torch.testing.assert_close(point, exact, rtol=1e-10, atol=1e-12)


def test_dependent_differences_take_the_least_norm_mixing_not_the_plain_step() -> None:
    # residuals (1, 0), (2, 0), (3, 0): the two differences of residuals are equal, so the
    # normal equations are exactly singular. The ridge keeps them solvable: of the γ with
    # γ₁ + γ₂ = 3 it takes the shortest, (1.5, 1.5), and proposes (3, 2) - 3 · (1, 1)
    accelerate = Anderson()
    points = torch.tensor([[[0.0, 0.0]], [[0.0, 1.0]], [[0.0, 2.0]]], dtype=F64)
    images = torch.tensor([[[1.0, 0.0]], [[2.0, 1.0]], [[3.0, 2.0]]], dtype=F64)
    for point, image in zip(points[:2], images[:2], strict=True):
        accelerate(point[None], image[None])
    proposed = accelerate(points[2][None], images[2][None])
    expected = torch.tensor([[[0.0, -1.0]]], dtype=F64)
    torch.testing.assert_close(proposed, expected, rtol=0, atol=1e-8)


def test_problems_do_not_mix_and_leaving_problems_are_dropped() -> None:
    a, b = _linear_problems(1, 4, 3)
    followed_a, followed_b = a[2:3], b[2:3]
    together, alone = Anderson(memory=3), Anderson(memory=3)
    point, single = torch.zeros_like(b), torch.zeros_like(b[2:3])
    for step in range(4):
        keep = torch.tensor([True, False, True, True]) if step == 2 else None
        if keep is not None:
            a, b, point = a[keep], b[keep], point[keep]
        point = together(point, a @ point + b, keep)
        single = alone(single, followed_a @ single + followed_b)
    # the problem first at row 2, row 1 after row 1 left, followed its own history only
    torch.testing.assert_close(point[1:2], single, rtol=1e-13, atol=1e-15)


def test_a_proposal_that_is_not_finite_falls_back_to_the_plain_step() -> None:
    accelerate = Anderson()
    point = torch.zeros(2, 2, 2, dtype=F64)
    image = torch.ones(2, 2, 2, dtype=F64)
    accelerate(point, image)
    broken = image.clone()
    broken[0, 0, 0] = torch.inf
    result = accelerate(image, broken)
    assert torch.equal(result[0], broken[0])
    assert bool(torch.isfinite(result[1]).all())
