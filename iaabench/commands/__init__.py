"""One small module per command (group); `iaabench/cli.py` wires them into the app."""
