"""``python -m medgan`` (and ``torchrun -m medgan``) runs the CLI."""

from medgan.cli import main

main()
