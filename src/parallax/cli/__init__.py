from parallax.cli.main import cli, main

__all__ = ["cli", "main"]
