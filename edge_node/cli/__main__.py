"""`python -m edge_node.cli`: the `edge-node` command, for a checkout without the entry point."""

from edge_node.cli.main import main

raise SystemExit(main())
