"""
Optimising through a Wasserstein barycenter
===========================================

Barycenters in ``barycentric`` are differentiable, so they can sit inside a loss. Here
three 2-D Gaussian experts are fused by their 2-Wasserstein barycenter, and we *learn*
the barycentric weights and the covariance of the third expert so that the barycenter
matches a target Gaussian, by gradient descent on the squared Wasserstein distance

.. math::

   \\mathcal{L}(\\lambda, \\Sigma_3) = W_2^2\\big(\\mathrm{bary}_\\lambda(q_1, q_2, q_3), p\\big).

The covariances are full, so the barycenter is the fixed point of Álvarez-Esteban et al.;
its gradient comes from implicit differentiation (:doc:`/theory`), whose memory does not
depend on the number of iterations.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Ellipse
from torch.distributions import MultivariateNormal

import barycentric as bc

torch.manual_seed(0)
dtype = torch.float64  # a tight fixed point; float32 works too

loc = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=dtype)
cov_fixed = torch.tensor([[[1.5, 0.9], [0.9, 1.0]], [[1.0, -0.7], [-0.7, 1.2]]], dtype=dtype)

# %%
# The target
# ----------
# We make the target ourselves, as the barycenter for weights and a third covariance
# that the optimisation does not see, so that we know a perfect fit exists.

true_weights = torch.tensor([0.6, 0.3, 0.1], dtype=dtype)
true_cov3 = torch.tensor([[0.3, 0.0], [0.0, 2.0]], dtype=dtype)


def experts_with(cov3):
    return MultivariateNormal(loc, covariance_matrix=torch.cat([cov_fixed, cov3[None]]))


target = bc.wasserstein_barycenter(experts_with(true_cov3), true_weights)

# %%
# The parameters
# --------------
# Unconstrained parameters keep the problem valid at every step: the weights are a
# softmax of logits (non-negative, summing to one) and the covariance is
# :math:`L L^\\top + \\epsilon I` for a lower-triangular :math:`L`.

logits = torch.zeros(3, dtype=dtype, requires_grad=True)
chol = torch.eye(2, dtype=dtype).requires_grad_()


def current():
    lower = torch.tril(chol)
    cov3 = lower @ lower.T + 1e-4 * torch.eye(2, dtype=dtype)
    weights = torch.softmax(logits, 0)
    return weights, cov3, bc.wasserstein_barycenter(experts_with(cov3), weights)


initial = current()[2]

# %%
# Implicit and unrolled gradients agree
# -------------------------------------
# Before optimising, compare the implicit gradient (the default) with the reference that
# back-propagates through every iteration of the solver.

grads = {}
for backward in ("implicit", "unroll"):
    lower = torch.tril(chol)
    cov3 = lower @ lower.T + 1e-4 * torch.eye(2, dtype=dtype)
    bary = bc.wasserstein_barycenter(
        experts_with(cov3), torch.softmax(logits, 0), backward=backward
    )
    loss = bc.wasserstein_distance(bary, target, squared=True)
    grads[backward] = torch.autograd.grad(loss, [logits, chol])
difference = max((a - b).abs().max().item() for a, b in zip(*grads.values(), strict=True))
print(f"largest difference between implicit and unrolled gradients: {difference:.1e}")

# %%
# Gradient descent
# ----------------

optimiser = torch.optim.Adam([logits, chol], lr=0.1)
losses = []
for _ in range(120):
    optimiser.zero_grad()
    loss = bc.wasserstein_distance(current()[2], target, squared=True)
    loss.backward()
    optimiser.step()
    losses.append(loss.item())

weights, cov3, fitted = current()
print(f"final loss {losses[-1]:.2e}")
print(f"weights: learned {weights.detach().numpy().round(3)}, true {true_weights.numpy()}")
print(f"third covariance, learned:\n{cov3.detach().numpy().round(3)}")

# %%
# The loss, and the barycenter before and after
# ---------------------------------------------


def ellipse(ax, dist, color, label, **kwargs):
    cov = dist.covariance_matrix.detach().numpy()
    eigenvalues, vectors = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
    width, height = 4 * np.sqrt(eigenvalues[::-1])  # 2 standard deviations
    mean = dist.mean.detach().numpy()
    ax.add_patch(
        Ellipse(mean, width, height, angle=angle, fill=False, color=color, label=label, **kwargs)
    )
    ax.plot(*mean, "+", color=color, markersize=10, mew=2)


fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
left.semilogy(losses)
left.set_xlabel("Adam step")
left.set_ylabel(r"$W_2^2$(barycenter, target)")
left.set_title("loss")
left.grid(alpha=0.3)

for m in range(2):
    expert = MultivariateNormal(loc[m], covariance_matrix=cov_fixed[m])
    ellipse(right, expert, "0.6", "fixed experts" if m == 0 else None, lw=1)
ellipse(
    right,
    MultivariateNormal(loc[2], covariance_matrix=cov3),
    "tab:green",
    "learned third expert",
    lw=1,
    ls=":",
)
ellipse(right, initial, "tab:blue", "barycenter at the start", lw=2, ls="--")
ellipse(right, target, "tab:red", "target", lw=5, alpha=0.4)
ellipse(right, fitted, "black", "barycenter after fitting", lw=1.5)
right.set_xlim(-5, 5)
right.set_ylim(-3, 5.5)
right.set_aspect("equal")
right.legend(loc="upper left", fontsize=8)
right.set_title("barycenters")
fig.tight_layout()
plt.show()
