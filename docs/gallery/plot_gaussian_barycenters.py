"""
Barycenters of Gaussians: PoE, MoE and Wasserstein
==================================================

Three 2-D Gaussian experts and their barycenters under the three divergences of
:doc:`/theory` (the idea of Figure 2 of Qiu et al., 2025):

* the **reverse-KL** barycenter, the precision-weighted product of experts (PoE), sits
  where the experts overlap and is tighter than any of them (zero-forcing);
* the **forward-KL** barycenter is the mixture (MoE); the Gaussian that matches its moments
  is wider than every expert (mass-covering);
* the **2-Wasserstein** barycenter averages the experts' positions *and shapes*: it lies
  between them, with a spread comparable to theirs.

Ellipses are the 2-standard-deviation contours of each Gaussian.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Ellipse
from torch.distributions import MultivariateNormal

import barycentric as bc


def rotated(angle_deg, sx, sy):
    """Covariance with standard deviations ``sx``, ``sy`` along axes rotated by ``angle``."""
    a = torch.deg2rad(torch.tensor(float(angle_deg)))
    rotation = torch.stack([torch.stack([a.cos(), -a.sin()]), torch.stack([a.sin(), a.cos()])])
    return rotation @ torch.diag(torch.tensor([sx**2, sy**2])) @ rotation.T


def ellipse(ax, dist, color, label, n_std=2.0, **kwargs):
    """Draw the ``n_std`` contour of a 2-D Gaussian as an ellipse."""
    cov = dist.covariance_matrix.detach().numpy()
    eigenvalues, vectors = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
    width, height = 2 * n_std * np.sqrt(eigenvalues[::-1])
    mean = dist.mean.detach().numpy()
    ax.add_patch(
        Ellipse(mean, width, height, angle=angle, fill=False, color=color, label=label, **kwargs)
    )
    ax.plot(*mean, marker="+", color=color, markersize=10, mew=2)


# %%
# The experts
# -----------
# Three full-covariance Gaussians, stacked along the batch dimension that ``dim=-1``
# (the default) indexes.

loc = torch.tensor([[-2.5, -0.5], [2.5, -0.5], [0.0, 2.5]])
cov = torch.stack([rotated(30, 1.6, 0.5), rotated(-30, 1.6, 0.5), rotated(90, 1.2, 0.6)])
experts = MultivariateNormal(loc, covariance_matrix=cov)
singles = [MultivariateNormal(loc[m], covariance_matrix=cov[m]) for m in range(3)]

# %%
# Their barycenters
# -----------------
# One call per divergence. The Wasserstein barycenter of full covariances is the fixed
# point of Álvarez-Esteban et al. (2016); ``return_info=True`` reports its convergence.

poe = bc.kl_barycenter(experts, direction="reverse")
moe = bc.kl_barycenter(experts, direction="forward")  # the mixture
moe_gaussian = bc.kl_barycenter(experts, direction="forward", project=True)
wb, info = bc.wasserstein_barycenter(experts, return_info=True)
print(f"fixed point: {info.iterations} iterations, converged: {bool(info.converged)}")

for name, q in [("PoE", poe), ("MoE (moments)", moe_gaussian), ("WB", wb)]:
    sd = torch.linalg.det(q.covariance_matrix).sqrt().item()
    print(f"{name:>14}: mean {q.mean.numpy().round(2)}, sqrt(det cov) {sd:.3f}")
expert_sd = torch.linalg.det(cov).sqrt().numpy().round(3)
print(f"{'experts':>14}: sqrt(det cov) {expert_sd}")

# %%
# Drawing them
# ------------
# Left: the experts with the three Gaussian barycenters. Right: the forward-KL
# barycenter itself, the mixture, as density contours; its moment-matched Gaussian is
# the dashed ellipse on the left.

expert_colors = ["tab:blue", "tab:orange", "tab:green"]
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
for m, color in enumerate(expert_colors):
    for ax in (left, right):
        ellipse(ax, singles[m], color, f"expert {m + 1}", alpha=0.8)
ellipse(left, poe, "tab:red", "PoE (reverse KL)", lw=2.5)
ellipse(left, moe_gaussian, "tab:purple", "MoE, moment-matched (forward KL)", lw=2.5, ls="--")
ellipse(left, wb, "black", "WB (2-Wasserstein)", lw=2.5)
left.set_title("Gaussian barycenters")
left.legend(loc="lower center", fontsize=8, ncol=2)

x, y = np.meshgrid(np.linspace(-7, 7, 200), np.linspace(-5, 7, 200))
grid = torch.from_numpy(np.stack([x, y], -1)).float()
density = moe.log_prob(grid).exp().numpy()
right.contourf(x, y, density, levels=12, cmap="Purples", alpha=0.8)
right.set_title("MoE: the mixture density (forward-KL barycenter)")
for ax in (left, right):
    ax.set_xlim(-7, 7)
    ax.set_ylim(-5, 7)
    ax.set_aspect("equal")
fig.tight_layout()
plt.show()

# %%
# Two experts: the Wasserstein geodesic
# -------------------------------------
# With two experts, the barycenter with weights :math:`(1 - t, t)` is McCann's
# displacement interpolation between them, computed in closed form. Moving :math:`t`
# from 0 to 1 transports the first expert's ellipse onto the second's, rotating it and
# keeping its size; the reverse-KL barycenter with the same weights leaves the segment
# between the means for the region where the two experts overlap.

pair = singles[:2]  # a list of distributions works as well as a batch
fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
ts = np.linspace(0.0, 1.0, 6)
colors = plt.cm.viridis(ts)
for t, color in zip(ts, colors, strict=True):
    weights = torch.tensor([1 - t, t])
    ellipse(top, bc.wasserstein_barycenter(pair, weights), color, f"t = {t:.1f}", lw=2)
    ellipse(bottom, bc.kl_barycenter(pair, weights), color, f"t = {t:.1f}", lw=2)
top.set_title("W2 barycenters of two experts: McCann interpolation")
bottom.set_title("reverse-KL barycenters (PoE) of the same two experts")
for ax in (top, bottom):
    ax.set_xlim(-6, 6)
    ax.set_ylim(-3.2, 2.8)
    ax.set_aspect("equal")
top.legend(loc="upper center", ncol=6, fontsize=8)
fig.tight_layout()
plt.show()
