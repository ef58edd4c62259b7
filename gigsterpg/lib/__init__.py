"""Library code of gigsterpg: PostgreSQL models and the MongoDB -> PostgreSQL sync."""
