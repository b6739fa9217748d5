"""Run the kotahub CLI with ``python -m hub``."""

from hub.cli import main

main()
