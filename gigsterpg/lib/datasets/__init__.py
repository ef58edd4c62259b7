"""Datasets: tables made by ``load-csv`` (CSV files) and ``transform`` (a SELECT over them), each replaced whole
in one transaction and registered in ``datasets``, and read back by ``/read``.

``tables`` holds what both writers share (the lock, the swap, the registry),
``load`` and ``transform`` are the two verbs, ``read`` the queries of the API.
"""
