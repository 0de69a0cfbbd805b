"""Connectors: learnable adapters that map a student tensor to its teacher's shape.

``base`` holds the :class:`Connector` contract and :func:`build_connector`; ``basic`` the
general-purpose ones; ``tokens`` the per-token and token↔feature-map ones (``token_linear``,
``tokens_to_map``, ``map_to_tokens``); ``ft``, ``mgd`` and ``vid`` the adapters of those methods. Importing the
package registers them all in :data:`kdforge.CONNECTORS`.
"""
from . import basic, ft, mgd, tokens, vid  # noqa: F401  (registration)
from .base import Connector, Shape, build_connector
from .basic import MLP, Conv1x1, Conv1x1BN, Conv3x3BN, Identity, Linear
from .ft import Paraphraser, Translator
from .mgd import ChannelReducer
from .vid import VIDRegressor

__all__ = ["ChannelReducer", "Connector", "Conv1x1", "Conv1x1BN", "Conv3x3BN", "Identity", "Linear", "MLP",
           "Paraphraser", "Shape", "Translator", "VIDRegressor", "build_connector"]
