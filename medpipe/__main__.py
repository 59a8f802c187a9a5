"""``python -m medpipe <command>``: the same as the ``medpipe`` command."""

from medpipe.commands import main

main()
