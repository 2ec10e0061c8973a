import sys

try:
    from .cli import main
except KeyboardInterrupt:       # Ctrl-C while the program starts: the exit code of an interrupted run
    sys.exit(130)

sys.exit(main())
