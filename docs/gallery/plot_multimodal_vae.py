"""
A multimodal VAE whose posterior is a barycenter
================================================

A walkthrough of ``examples/multimodal_vae`` (see :doc:`/multimodal_vae`) on its tiny
synthetic dataset: three image modalities that share a class. We build two
``MultimodalVAE`` models that differ only in how they fuse the unimodal posteriors
:math:`q(z \\mid x_m)`,

* ``poe``: the product of experts with the prior (MVAE),
* ``mwb``: the mixture over all subsets of modalities of their 2-Wasserstein barycenters
  (MWB-VAE),

train each for 100 steps, and compare the loss curves and how well the latent space
separates the classes when only some modalities are observed.
"""

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

# The example is a folder of scripts in the repository, not a package: find it from the
# working directory (anywhere inside a clone) and put it on the path.
EXAMPLE = next(
    (
        p / "examples" / "multimodal_vae"
        for p in [Path.cwd(), *Path.cwd().parents]
        if (p / "examples" / "multimodal_vae" / "model.py").is_file()
    ),
    None,
)
if EXAMPLE is None:
    raise SystemExit("run this script from inside a clone of the barycentric repository")
sys.path.insert(0, str(EXAMPLE))

from data import get_dataset
from model import MultimodalVAE
from objectives import elbo_loss

# %%
# The data
# --------
# ``get_dataset("synthetic", ...)`` makes the data in memory: each of the three
# modalities is a noisy 8x8 binary prototype image of the sample's class (8 classes).
# The noise is strong enough that one modality alone is ambiguous.

options = {"num_modalities": 3, "num_classes": 8, "shape": (1, 8, 8), "noise": 0.6}
train_set = get_dataset("synthetic", "train", n=512, **options)
test_set = get_dataset("synthetic", "test", n=256, **options)
print([spec.name for spec in train_set.specs], train_set.num_classes, len(train_set))

# %%
# The models and the training loop
# --------------------------------
# The aggregation is one argument of the model: ``model.encode(xs, mask)`` calls the
# barycentric function for it on the stacked experts. ``elbo_loss`` picks the joint ELBO
# for a Gaussian posterior (``poe``) and the stratified ELBO over the mixture components
# for a mixture (``mwb``), each point decoding one component, the batch split among the
# components as MoPoE's code does (:func:`barycentric.split_rsample`).

STEPS, LATENT_DIM = 100, 8


def train(aggregation):
    torch.manual_seed(0)
    model = MultimodalVAE(train_set.specs, LATENT_DIM, aggregation)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    loader = DataLoader(train_set, batch_size=64, shuffle=True)
    losses = []
    while len(losses) < STEPS:
        for xs, _ in loader:
            loss, _ = elbo_loss(model, xs)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if len(losses) == STEPS:
                break
    return model, losses


models, curves = {}, {}
for aggregation in ("poe", "mwb"):
    models[aggregation], curves[aggregation] = train(aggregation)
    print(f"{aggregation}: loss {curves[aggregation][0]:.1f} -> {curves[aggregation][-1]:.1f}")

# %%
# Missing modalities
# ------------------
# A ``mask`` of shape ``(B, M)`` marks the observed modalities; the missing ones get zero
# weight in the barycenter, with no change to the model. We encode the test set from
# one, two or three modalities and classify the posterior means by the nearest class
# mean of the training set's (a cheap stand-in for the example's linear probe).


def stack(dataset):
    xs, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return [torch.stack(m) for m in zip(*xs, strict=True)], torch.tensor(labels)


@torch.no_grad()
def latent_accuracy(model, observed):
    def means(dataset):
        xs, labels = stack(dataset)
        mask = torch.zeros(len(labels), 3, dtype=torch.bool)
        mask[:, observed] = True
        return model.encode(xs, mask).mean, labels

    (z_train, y_train), (z_test, y_test) = means(train_set), means(test_set)
    centroids = torch.stack([z_train[y_train == c].mean(0) for c in range(train_set.num_classes)])
    predicted = torch.cdist(z_test, centroids).argmin(1)
    return (predicted == y_test).float().mean().item()


subsets = {"1 modality": [0], "2 modalities": [0, 1], "3 modalities": [0, 1, 2]}
accuracy = {
    aggregation: [latent_accuracy(model, observed) for observed in subsets.values()]
    for aggregation, model in models.items()
}
for aggregation, row in accuracy.items():
    print(aggregation, " ".join(f"{name}: {a:.2f}" for name, a in zip(subsets, row, strict=True)))

# %%
# Loss curves and latent accuracy
# -------------------------------
# The two losses are negative ELBOs but of different bounds (joint for ``poe``,
# stratified over 7 subset components for ``mwb``), so compare their shapes rather than
# their values. This is one short run with one seed on toy data, an illustration of the
# API rather than a benchmark; the example's training script and its metrics are the
# place for comparisons (:doc:`/multimodal_vae`).

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for aggregation, losses in curves.items():
    left.plot(losses, label=aggregation)
left.set_xlabel("step")
left.set_ylabel("negative ELBO")
left.set_title("training loss")
left.legend()
width = 0.35
for i, (aggregation, row) in enumerate(accuracy.items()):
    positions = [k + (i - 0.5) * width for k in range(len(subsets))]
    right.bar(positions, row, width, label=aggregation)
right.set_xticks(range(len(subsets)), list(subsets))
right.set_ylim(0, 1.25)
right.set_ylabel("nearest-class-mean accuracy")
right.set_title("class information in the latent means")
right.legend(loc="upper center", ncol=2)
fig.tight_layout()
plt.show()
