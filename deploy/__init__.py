"""Putting bundles on robots: flash (local or ssh targets), the systemd service, doctor."""
