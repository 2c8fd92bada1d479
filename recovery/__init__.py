"""Finds qualification runs whose worker died and fails them, exactly once, with an audit trail."""
