"""jaxdl: two deep-learning course projects in JAX (Flax + Optax), checked against PyTorch.

Importing the package is cheap (no JAX import): submodules are imported on demand.
"""

__version__ = "0.1.0"
