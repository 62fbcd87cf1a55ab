"""MLflow "models from code" entry point.

MLflow executes this file when the model is loaded; ``set_model`` names the object to serve.
Nothing else should import it.
"""

from mlflow.models import set_model

from fairtrain.registry.pyfunc_model import FairtrainModel

set_model(FairtrainModel())
