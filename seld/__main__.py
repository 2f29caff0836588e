from seld.cli import cli

raise SystemExit(cli())
