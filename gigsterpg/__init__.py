"""gigsterpg: replicate the Gigster MongoDB database into PostgreSQL."""

__version__ = "0.1.0"
