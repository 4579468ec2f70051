"""barycentric: exact, fast, differentiable barycenters of probability distributions.

>>> import torch
>>> from torch.distributions import Independent, Normal
>>> import barycentric as bc
>>> experts = Independent(Normal(torch.zeros(8, 3, 4), torch.ones(8, 3, 4)), 1)  # 8 rows, 3 experts
>>> bc.wasserstein_barycenter(experts).batch_shape
torch.Size([8])
"""

from barycentric import functional, linalg
from barycentric._version import __version__
from barycentric.distributions import (
    barycenter,
    kl_barycenter,
    product_of_experts,
    wasserstein_barycenter,
    wasserstein_distance,
)
from barycentric.empirical import empirical_barycenter
from barycentric.gmm import gmm_barycenter
from barycentric.mixtures import (
    mixture_of_barycenters,
    mixture_of_products,
    split_rsample,
    stratified_rsample,
)

__all__ = [
    "__version__",
    "barycenter",
    "empirical_barycenter",
    "functional",
    "gmm_barycenter",
    "kl_barycenter",
    "linalg",
    "mixture_of_barycenters",
    "mixture_of_products",
    "product_of_experts",
    "split_rsample",
    "stratified_rsample",
    "wasserstein_barycenter",
    "wasserstein_distance",
]
