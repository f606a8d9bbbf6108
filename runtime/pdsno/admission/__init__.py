"""Controller admission (reference-design §2): bootstrap tokens, challenge/response, identities."""
