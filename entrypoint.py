#!/usr/bin/env python3
"""The container's entrypoint: hand over to mailboot's command line."""

from mailboot.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
