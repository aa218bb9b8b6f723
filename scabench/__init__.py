"""scabench: a benchmark and ablation harness for bounding-box regression losses.

Built around *SCALoss: Side and Corner Aligned Loss for Bounding Box Regression* (Zheng et
al., AAAI 2022). The layers, each a folder of the repository installed under this namespace:

- :mod:`scabench.losses`: the loss zoo (pure functions on xyxy boxes, no IO);
- :mod:`scabench.detectors`: the YOLOv3 family, its data, training and COCO evaluation;
- :mod:`scabench.bench`: grids, runner, synthetic studies, the command line;
- :mod:`scabench.reports`: tables and figures from result folders.

Imports point one way: bench -> detectors -> losses; reports reads files. What every layer
shares lives here: :mod:`scabench.results` (the results-folder format) and
:mod:`scabench.devices` (what a ``device`` string means).
"""

__version__ = "0.2.0"
