"""CLI commands, one module per group; each registers itself on ``deepgmm.cli.app``."""
