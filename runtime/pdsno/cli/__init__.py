"""The ``pdsno`` command line."""
