"""The control plane: HTTP API, auth, live dashboard (`parallax serve`)."""
