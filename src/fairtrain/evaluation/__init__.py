"""Evaluation: test metrics, fairness audit, attributions and promotion gates."""
