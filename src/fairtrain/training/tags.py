"""Names of the run tags rank 0 sets when training starts: where the training actually ran
(what the workers got, not what params asked for), for whoever compares runs in MLflow later.
A module of its own so readers of these tags (the register stage) need not import Lightning."""

DEVICE_TAG = "fairtrain.train.device"
BACKEND_TAG = "fairtrain.train.backend"
PRECISION_TAG = "fairtrain.train.precision"
WORLD_SIZE_TAG = "fairtrain.train.world_size"
DETERMINISTIC_TAG = "fairtrain.train.deterministic"  # torch's deterministic algorithms were on
# The Lightning package the workers trained with (fairtrain.lightning follows Ray Train's pick).
LIGHTNING_TAG = "fairtrain.train.lightning_package"
