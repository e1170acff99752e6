"""``python -m sizetransfer.sweep``."""
from sizetransfer.sweep import cli

cli()
