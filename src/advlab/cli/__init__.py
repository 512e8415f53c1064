"""The ``advlab`` command line: one module per subcommand; errors and exit codes live here only."""
