"""Run the kotahub CLI with ``python -m hub``."""

from hub.cli import main

# Guarded: the alert engine's process (spawned) imports this module as __mp_main__.
if __name__ == "__main__":
    main()
