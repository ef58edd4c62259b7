"""The sync engine: what moves documents of any registered model from MongoDB into PostgreSQL.

``runner`` (one run: lock, record, scan each collection), ``follow`` (tail the
change streams), ``bulk`` (one batch: hash, map, COPY, merge, rejects),
``reader`` (read ahead on threads), ``staging`` (temp tables and binary COPY),
``fingerprint`` (a raw document's id and hash). It knows the models only
through ``gigsterpg.lib.pg.sync.contract.SyncModel`` and the registry.
"""
