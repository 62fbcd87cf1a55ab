"""fairtrain trains with the Lightning package Ray Train's integration uses (see
src/fairtrain/lightning.py): with both ``lightning`` and ``pytorch-lightning`` installed, a
Trainer of one package refuses the other's strategy, module and callbacks."""

from __future__ import annotations

import re

from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback

from fairtrain.lightning import pl
from fairtrain.models.lightning_module import TabularClassifier
from tests.helpers import PROJECT_ROOT

DIRECT_IMPORT = re.compile(r"^\s*(?:import|from)\s+(?:pytorch_lightning|lightning_fabric|lightning)\b", re.M)


def test_fairtrain_uses_the_lightning_package_of_ray_trains_integration():
    # Where only pytorch-lightning is installed (CI) both sides are pytorch_lightning; the
    # case this guards, both packages installed, was seen on a GPU image (see the module).
    # The import scan below is what keeps every module on the shim.
    assert issubclass(RayDDPStrategy, pl.strategies.Strategy)
    assert issubclass(RayTrainReportCallback, pl.Callback)
    assert isinstance(RayLightningEnvironment(), pl.plugins.environments.ClusterEnvironment)
    assert issubclass(TabularClassifier, pl.LightningModule)


def test_only_the_shim_imports_a_lightning_package():
    sources = [*(PROJECT_ROOT / "src").rglob("*.py"), *(PROJECT_ROOT / "tests").rglob("*.py")]
    sources += [*(PROJECT_ROOT / "benchmarks").glob("*.py"), *(PROJECT_ROOT / "pipelines").glob("*.py")]
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for path in sources
        if path != PROJECT_ROOT / "src/fairtrain/lightning.py" and DIRECT_IMPORT.search(path.read_text())
    ]
    assert offenders == [], "import Lightning from fairtrain.lightning, which follows Ray's choice"
