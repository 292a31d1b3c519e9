"""``dynscale.graph``: one traced graph of a model under every method.

``trace(model, example)`` traces with ``torch.fx`` and propagates the example's shapes; the
:class:`ModelGraph` answers the structure queries (layers, ReLU chains, residual blocks, stage
boundaries, ``split``) and the channel-dependency groups a width cuts together.
"""

from .groups import ChannelGroup, ChannelGroups, Segment
from .model import Block, Boundary, Chain, ModelGraph
from .trace import trace
from .types import GraphError

__all__ = ["Block", "Boundary", "Chain", "ChannelGroup", "ChannelGroups", "GraphError", "ModelGraph", "Segment",
           "trace"]
