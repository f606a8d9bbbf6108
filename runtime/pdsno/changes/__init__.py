"""Configuration changes (reference-design §5): proposals, approvals, execution tokens, executors."""
