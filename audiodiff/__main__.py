"""``python -m audiodiff`` runs the CLI (this is how torchrun launches training)."""

from audiodiff.cli import main

if __name__ == "__main__":
    main()
