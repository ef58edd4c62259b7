"""The projections shipped with gigsterpg: one SQL query per file, its rows the documents (see orders.sql)."""
