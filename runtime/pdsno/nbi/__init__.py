"""The Global controller's northbound REST API under ``/api/v1`` (decisions.md §4)."""
