"""Unit and end-to-end tests of jaxdl and torch_reference."""
