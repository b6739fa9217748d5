"""One module per board; each exposes ``UID`` and ``build(figures)``."""
