"""One network as good as many (SPEC §5): universally slimmable training and the independently
trained family it is compared with."""

from .recipes import Independent, Sandwich

__all__ = ["Independent", "Sandwich"]
