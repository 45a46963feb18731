"""The ``hydra-st`` command line."""
