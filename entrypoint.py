#!/usr/bin/env python3
"""The container's entrypoint: hand over to mailboot's command line.

`run` first tries the warm start, which imports a fraction of what the command line does: a
restart with nothing changed reaches the daemons without it (mailboot/boot/run.py).
"""

import os
import sys

if __name__ == "__main__":
    if sys.argv[1:] == ["run"]:
        from mailboot.boot import run

        run.start_warm(os.environ)  # returns only when the full boot must run
    from mailboot.cli.main import main

    raise SystemExit(main())
