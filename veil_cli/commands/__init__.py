"""One module per ``veil`` subcommand."""
