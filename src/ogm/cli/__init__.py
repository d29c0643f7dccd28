"""The ``ogm`` command line: one module per command group."""
