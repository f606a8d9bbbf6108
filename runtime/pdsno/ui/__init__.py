"""The GC's web dashboard at ``/ui`` (see docs/ui.md)."""
