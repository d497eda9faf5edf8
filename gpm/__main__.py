"""``python -m gpm`` and the ``gpm`` script.

Ctrl-C while Python is still importing gpm's modules must end the process as
quietly as it ends any Unix tool, not with a traceback from inside an import
(#12.11). Until ``main()`` takes over, SIGINT keeps its default action: the
process ends by the signal, which the shell shows as exit 130. Hence the
import inside ``run()``, after that switch.
"""

import signal


def run() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from gpm.cli import main

    main()


if __name__ == "__main__":
    run()
