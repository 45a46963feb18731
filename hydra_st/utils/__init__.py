"""Small shared utilities: atomic file writes, content fingerprints, optional-import guards."""
