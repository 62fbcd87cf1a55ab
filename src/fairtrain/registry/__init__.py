"""MLflow model packaging, registration, promotion and lineage."""
