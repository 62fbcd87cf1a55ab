"""Ray Train wiring: the driver that launches workers and the loop each worker runs."""
