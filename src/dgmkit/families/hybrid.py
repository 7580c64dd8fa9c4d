"""The hybrid family (Nalisnick et al. 2019): one normalizing flow gives log p(x) exactly and,
through a linear classifier on its output, p(y|x); trained on log p(y|x) + (lambda / D) log p(x).
The flow settings are the flow family's."""

import dataclasses

from dgmkit.errors import ConfigError
from dgmkit.families.base import DataSpec
from dgmkit.families.flow import FlowConfig
from dgmkit.families.parts import LabelledBatches
from dgmkit.models import FlowModel
from dgmkit.models.hybrid import HybridFlow
from dgmkit.objectives import Objective
from dgmkit.objectives.semisupervised import HybridObjective
from dgmkit.settings import setting

__all__ = ["HybridConfig"]


@dataclasses.dataclass
class HybridConfig(LabelledBatches, FlowConfig):
    name = "hybrid"
    summary = "hybrid model p(y|x) p(x): a flow with a linear classifier on its output (Nalisnick et al.)"

    classes: int = setting(10, "classes K of the labels (0..K-1)", min=2, max=1000)
    px_weight: float = setting(
        1.0, "lambda: the loss is -(log p(y|x) + lambda / D log p(x)), D the data's dimensions", min=0, max=1e6
    )
    labelled_batch: int = setting(
        0, "labelled rows added to every batch (drawn from the kept labels; for --labels N)", min=0, max=10**6
    )

    def validate(self) -> None:
        if self.px_weight == 0:  # (a run kept its first epoch's weights: 25% valid accuracy against its last's 67%)
            raise ConfigError(
                "--px-weight 0 trains no density, and the hybrid's early stopping and best checkpoint follow the "
                "validation log p(x): they would keep arbitrary weights; give lambda > 0 (a small one, 0.01, for a "
                "mostly discriminative flow)"
            )
        if self.dequantization != "uniform":
            raise ConfigError("the hybrid model's classifier reads the flow's output: it needs uniform dequantization")

    def describe(self) -> str:
        layers = f"{self.flow_layers} layers per level"
        return f"a hybrid {self.flow} flow ({layers}) with a linear classifier of {self.classes} classes"

    def training_objective(self) -> Objective:
        return HybridObjective(self.px_weight)

    def model_for(self, data: DataSpec) -> HybridFlow:
        flow = super().model_for(data)
        if not isinstance(flow, FlowModel):  # excluded by validate: uniform dequantization only
            raise ConfigError("the hybrid model needs a flow of uniformly dequantized data")
        return HybridFlow(flow, self.classes)
