"""Keys, signatures and everything that decides whom a controller trusts."""
