"""The one command-line tool, ``veil``; one module per subcommand in ``commands``."""
