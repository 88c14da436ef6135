"""Run the CLI from a checkout: ``python cli.py score data/sample.parquet -o scores.parquet``."""

from xent_numba.cli.commands import main

if __name__ == "__main__":
    main()
