"""
Barycenters of point clouds and histograms
==========================================

Beyond Gaussians, :func:`barycentric.empirical_barycenter` computes Wasserstein
barycenters of samples, through POT's torch backend:

* ``method="free_support"``: the barycenter of point clouds is itself a point cloud whose
  atoms move (Cuturi & Doucet, 2014), here between a ring and a square outline;
* ``method="sinkhorn"``: the entropic barycenter of histograms on a common support
  (Benamou et al., 2015), here of two bumps on a line, next to their plain average.
"""

import math

import matplotlib.pyplot as plt
import torch

import barycentric as bc

generator = torch.Generator().manual_seed(0)

# %%
# Free support: from a ring to a square
# -------------------------------------
# Two clouds of 200 points: a noisy ring and a noisy square outline. Their barycenter
# with weights :math:`(1 - t, t)` moves the ring's points towards the square's as
# :math:`t` grows: the displacement interpolation of the two clouds.

n = 200
angle = 2 * math.pi * torch.rand(n, generator=generator)
ring = torch.stack([angle.cos(), angle.sin()], 1)
side = torch.randint(0, 4, (n,), generator=generator)
position = 2 * torch.rand(n, generator=generator) - 1
corners = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
along = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
square = 0.8 * (corners[side] + position[:, None] * along[side])
ring = ring + 0.03 * torch.randn(n, 2, generator=generator)
square = square + 0.03 * torch.randn(n, 2, generator=generator)

ts = [0.0, 0.25, 0.5, 0.75, 1.0]
fig, axes = plt.subplots(1, len(ts), figsize=(13, 3), sharex=True, sharey=True)
for ax, t in zip(axes, ts, strict=True):
    if t in (0.0, 1.0):
        points = ring if t == 0.0 else square
    else:
        points, _ = bc.empirical_barycenter([ring, square], torch.tensor([1 - t, t]), init=ring)
    ax.scatter(*points.T, s=4, color=plt.cm.viridis(t))
    ax.set_title(f"t = {t}")
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("free-support barycenters of a ring (t = 0) and a square (t = 1)")
fig.tight_layout()
plt.show()

# %%
# Three clouds, uniform weights
# -----------------------------
# Any number of clouds, of different sizes; the barycenter has ``support_size`` atoms.

clouds = [
    ring + torch.tensor([-3.0, 0.0]),
    square + torch.tensor([3.0, 0.0]),
    0.4 * torch.randn(150, 2, generator=generator) + torch.tensor([0.0, 3.5]),
]
atoms, masses = bc.empirical_barycenter(clouds, support_size=150)
print(f"{atoms.shape[0]} atoms of mass {masses[0]:.4f}; their mean {atoms.mean(0).numpy()}")

fig, ax = plt.subplots(figsize=(6, 5))
for cloud, color in zip(clouds, ["tab:blue", "tab:orange", "tab:green"], strict=True):
    ax.scatter(*cloud.T, s=4, color=color, alpha=0.5)
ax.scatter(*atoms.T, s=6, color="black", label="barycenter")
ax.set_aspect("equal")
ax.legend(loc="lower center")
ax.set_title("free-support barycenter of three clouds")
fig.tight_layout()
plt.show()

# %%
# Sinkhorn barycenter of histograms
# ---------------------------------
# Two bumps on a grid of 100 points of :math:`[0, 1]`. Their Wasserstein barycenter is a
# bump half-way between them; their Euclidean average keeps two bumps. The entropic
# regularisation ``reg`` blurs the barycenter slightly.

grid = torch.linspace(0.0, 1.0, 100, dtype=torch.float64)


def bump(center, width):
    density = torch.exp(-0.5 * ((grid - center) / width) ** 2)
    return density / density.sum()


histograms = torch.stack([bump(0.25, 0.04), bump(0.75, 0.08)], 1)  # (n, K)
_, wasserstein = bc.empirical_barycenter(
    histograms, method="sinkhorn", support=grid[:, None], reg=1e-3
)
euclidean = histograms.mean(1)

fig, ax = plt.subplots(figsize=(8, 3.5))
ax.fill_between(grid, histograms[:, 0], alpha=0.3, label="histogram 1")
ax.fill_between(grid, histograms[:, 1], alpha=0.3, label="histogram 2")
ax.plot(grid, euclidean, "--", color="0.3", label="Euclidean average")
ax.plot(grid, wasserstein, color="tab:red", lw=2, label="Sinkhorn barycenter (reg=1e-3)")
ax.set_xlabel("x")
ax.legend()
fig.tight_layout()
plt.show()
