"""The ``people`` command: run a server, or talk to one (entry point: ``people.cli.main.main``)."""
