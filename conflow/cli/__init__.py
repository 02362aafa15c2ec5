"""The ``conflow`` command (top layer): `main` dispatches to one module per subcommand."""
