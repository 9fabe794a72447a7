"""`python -m mailboot` is the same as the `mailboot` command."""

from mailboot.cli.main import main

raise SystemExit(main())
