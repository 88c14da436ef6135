import os
import signal


def _before_main(signum, frame):  # nothing written yet: leave at once, quietly
    os._exit(128 + signum)


# Ctrl-C, SIGTERM or SIGHUP while the package is imported (slow on a cold start) ends
# the process with the shell's code; ``main`` then installs the handlers that clean up.
for _sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)):
    signal.signal(_sig, _before_main)

from .cli import main  # noqa: E402

main()
