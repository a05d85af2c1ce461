"""The ``sparsekit`` command line: parses options, calls the library, renders output."""
