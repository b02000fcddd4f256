"""Services of the distributed platform: thin shells around the ``mfpo`` library."""
