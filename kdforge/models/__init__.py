"""Model zoo (registered in :data:`kdforge.MODELS` on import), model building, weights and profiling."""
from . import cnn, mobilenetv2, resnet, shufflenet, vgg, wrn  # noqa: F401  (registers the zoo)
from . import det, seg  # noqa: F401  (segmentation and detection nets)
from .build import WeightsError, WeightsFileNotFoundError, build_model, load_weights
from .profile import count_flops, count_macs, count_params

__all__ = ["WeightsError", "WeightsFileNotFoundError", "build_model", "count_flops", "count_macs", "count_params", "load_weights"]
