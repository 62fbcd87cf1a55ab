"""Monitoring after deployment: drift of new data against the training reference."""
