"""The benchmark of gigsterpg: python -m bench."""
