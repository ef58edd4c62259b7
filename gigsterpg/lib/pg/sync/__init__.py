"""Sync modules: one per model, each with ``mongo_to_pg``, plus the bulk machinery they share."""
