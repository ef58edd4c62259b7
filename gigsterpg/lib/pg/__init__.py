"""The PostgreSQL side: mapped classes (``db``) and the sync into them (``sync``)."""
