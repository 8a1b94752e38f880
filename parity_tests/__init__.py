"""torch_reference vs jaxdl: the same numbers, to the last digit float allows."""
