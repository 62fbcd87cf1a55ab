"""Model card rendering from what the pipeline recorded."""
