"""``python -m gpm`` and the ``gpm`` script.

Ctrl-C while Python is still importing gpm's modules must end the process as
quietly as it ends any Unix tool, not with a traceback from inside an import
(#12.11). Until ``main()`` takes over, SIGINT keeps its default action: the
process ends by the signal, which the shell shows as exit 130. Hence the
import inside ``run()``, after that switch.
"""

# The built-in _signal, not signal: importing signal.py (and enum behind it)
# took long enough for a Ctrl-C to land inside it, as a traceback.
from _signal import SIG_DFL, SIGINT, signal


def run() -> None:
    signal(SIGINT, SIG_DFL)
    from gpm.cli import main  # after SIGINT's reset, see above (#12.11)

    main()


if __name__ == "__main__":
    run()
