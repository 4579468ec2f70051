"""Settings for every test session (library and examples alike)."""

import torch

# pytest-xdist runs one worker per core: a second intra-op thread per worker only
# oversubscribes the machine, and batched LAPACK calls on small matrices then slow down
# by orders of magnitude under MKL/OpenMP contention.
torch.set_num_threads(1)
