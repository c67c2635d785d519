"""One module per command family; each lists its commands in ``COMMANDS`` (see ``main``)."""
