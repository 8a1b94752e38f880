"""Project II: a mini deep-learning framework without autograd, as pure JAX functions."""
