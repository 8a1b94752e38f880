"""torch_reference: the torch-only versions of the two projects that jaxdl is checked against."""
