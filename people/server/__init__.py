"""The server process: settings, the composition root, logging and ``--workers``.

Settings come from flags and ``PEOPLE_*`` variables; the composition root turns
them into store -> directory -> service -> runtime and runs it until a signal.
"""
