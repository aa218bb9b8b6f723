"""scabench's loss zoo: box-regression losses on xyxy boxes, one value per box.

    >>> from scabench import losses
    >>> loss = losses.get_loss("sca", alpha=1.0)
    >>> loss(pred, target)            # Tensor[...], no reduction
    >>> loss.similarity(pred, target) # the objectness target a detector uses

``losses.available()`` lists the names; ``"iou+cd"`` style sums compose them.
"""

from scabench.losses.registry import (
    BoxLoss,
    LossSpec,
    available,
    check_boxes,
    get_loss,
    parse_expression,
    register,
    spec,
)

# Importing the modules registers their losses.
from scabench.losses import iou, sca, coordinate, successors, wise_iou  # noqa: E402,F401  isort: skip

__all__ = [
    "BoxLoss",
    "LossSpec",
    "available",
    "check_boxes",
    "get_loss",
    "parse_expression",
    "register",
    "spec",
]
