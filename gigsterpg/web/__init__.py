"""The status page served by ``serve`` at ``/``: server-rendered templates over ``gigsterpg.lib.status``."""
