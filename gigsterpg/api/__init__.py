"""The HTTP API (``python -m gigsterpg.cli serve``): jobs over the library verbs, reads over the replicated data."""
