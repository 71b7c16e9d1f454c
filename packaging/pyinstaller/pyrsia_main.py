"""Entry point frozen into the single `pyrsia` executable. It also runs the daemon's
signature helper process (`pyrsia.translog.sigcheck`), which the executable cannot
start with `python -m`."""

import sys

from pyrsia.translog import sigcheck

if sys.argv[1:] == [sigcheck.HELPER_ARG]:
    sigcheck.main()
else:
    from pyrsia.cli.app import main

    main()
