"""`python -m controller.cli`."""

from controller.cli import main

main()
